// Instantiates wino_body.h for one vector width (VT, VTI, VW, VLD, VST
// defined by the includer): once fully unrolled for the specialised tile
// sizes (WINO_NAME_UNROLLED) and once without unrolling for the generic
// fallback (WINO_NAME_GENERIC); then clears the width's macros.
#define WINO_UNROLL _Pragma("GCC unroll 8")
#define WINO_NAME(x) WINO_NAME_UNROLLED(x)
#include "wino_body.h"
#undef WINO_UNROLL
#undef WINO_NAME
#define WINO_UNROLL
#define WINO_NAME(x) WINO_NAME_GENERIC(x)
#include "wino_body.h"
#undef WINO_UNROLL
#undef WINO_NAME
#undef WINO_NAME_UNROLLED
#undef WINO_NAME_GENERIC
#undef VT
#undef VTI
#undef VW
#undef VLD
#undef VST
