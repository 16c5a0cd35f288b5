// The instruction-set level the kernels use: chosen once by the Go side
// (native.SetISA, from CPUID and NINBATCH_ISA) and clamped here to what the
// CPU and OS support, so no setting can reach an instruction the CPU lacks.
#include "kernels.h"

static int nb_isa = -1;

int nb_isa_supported(void) {
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    // libgcc's checks include the OS's XGETBV state for the YMM/ZMM registers
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("fma"))
        return NB_ISA_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return NB_ISA_AVX2;
#endif
    return NB_ISA_SCALAR;
}

int nb_set_isa(int level) {
    const int top = nb_isa_supported();
    nb_isa = level < 0 ? top : (level > top ? top : level);
    return nb_isa;
}

int nb_isa_level(void) {
    if (nb_isa < 0) nb_set_isa(-1);
    return nb_isa;
}

int nb_have_avx2_fma(void) { return nb_isa_level() >= NB_ISA_AVX2; }

// nb_relax: a spin-wait step that yields the core's execution resources to
// its SMT sibling (PAUSE), for the engine's brief spins between layer calls.
void nb_relax(int n) {
#if defined(__x86_64__) && defined(__GNUC__)
    for (int i = 0; i < n; i++) __builtin_ia32_pause();
#else
    (void)n;
#endif
}
