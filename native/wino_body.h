// Winograd transform bodies, included by winograd.c once per vector width
// (VT: VW floats, loaded and stored by VLD/VST) and per unrolling: with
// WINO_UNROLL a full-unroll pragma for the specialised tile sizes (constant
// m, a and tables, so zero entries fold away), and with it empty for the
// generic fallback, whose runtime bounds would otherwise unroll into
// minutes of compile time for code that no preset runs. WINO_NAME names
// each copy.
INLINE void WINO_NAME(wino_in_body)(const float *in, int64_t h, int64_t w, int64_t c, int64_t p,
                         int64_t th, int64_t tw, const int64_t m, const int64_t a, const float *bt,
                         int64_t t0, int64_t nt, const int64_t vstride, float *v) {
    const int64_t plane = th * tw;
    for (int64_t tt = 0; tt < nt; tt++) {
        const int64_t t = t0 + tt;
        const int64_t img = t / plane, r = t % plane;
        const int64_t iy0 = (r / tw) * m - p, ix0 = (r % tw) * m - p;
        const float *base = in + img * h * w * c;
        for (int64_t q = 0; q < c; q += VW) {
            const int64_t nq = c - q < VW ? c - q : VW;
            VT d[NB_WINO_MAXA][NB_WINO_MAXA], t1[NB_WINO_MAXA][NB_WINO_MAXA];
            WINO_UNROLL
            for (int64_t i = 0; i < a; i++) {
                const int64_t y = iy0 + i;
                WINO_UNROLL
                for (int64_t j = 0; j < a; j++) {
                    const int64_t x = ix0 + j;
                    if (y < 0 || y >= h || x < 0 || x >= w) {
                        d[i][j] = (VT){0};
                    } else {
                        d[i][j] = VLD(base + (y * w + x) * c + q, nq);
                    }
                }
            }
            WINO_UNROLL
            for (int64_t i = 0; i < a; i++) {
                WINO_UNROLL
                for (int64_t j = 0; j < a; j++) {
                    VT s = {0};
                    WINO_UNROLL
                    for (int64_t k = 0; k < a; k++) {
                        const float b = bt[i * a + k];
                        if (b != 0) s += b * d[k][j];
                    }
                    t1[i][j] = s;
                }
            }
            float *o = v + tt * c + q;
            WINO_UNROLL
            for (int64_t i = 0; i < a; i++) {
                WINO_UNROLL
                for (int64_t j = 0; j < a; j++) {
                    VT s = {0};
                    WINO_UNROLL
                    for (int64_t k = 0; k < a; k++) {
                        const float b = bt[j * a + k];
                        if (b != 0) s += b * t1[i][k];
                    }
                    VST(o + (i * a + j) * vstride, s, nq);
                }
            }
        }
    }
}

// One output pixel of the output transform's column pass: act(*bv + Σ_k
// Aᵀ[j][k]·t1i[k]) stored to dst (nq channels).
INLINE void WINO_NAME(wino_out_px)(const VT *t1i, const int64_t a, const float *at, int64_t j,
                                   const VT *bv, int relu, float *dst, int64_t nq) {
    VT s = *bv;
    WINO_UNROLL
    for (int64_t k = 0; k < a; k++) {
        const float b = at[j * a + k];
        if (b != 0) s += b * t1i[k];
    }
    if (relu) s = (VT)((VTI)s & (s > (VT){0}));  // NaN → 0, as nb_bias_act
    VST(dst, s, nq);
}

INLINE void WINO_NAME(wino_out_body)(const float *mm, int64_t oh, int64_t ow, int64_t cout,
                          int64_t th, int64_t tw, const int64_t m, const int64_t a, const float *at,
                          const float *bias, int relu, int64_t t0, int64_t nt, const int64_t mstride,
                          const int64_t ldo, float *out) {
    const int64_t plane = th * tw;
    for (int64_t tt = 0; tt < nt; tt++) {
        const int64_t t = t0 + tt;
        const int64_t img = t / plane, r = t % plane;
        const int64_t oy0 = (r / tw) * m, ox0 = (r % tw) * m;
        const int64_t mi = oh - oy0 < m ? oh - oy0 : m, mj = ow - ox0 < m ? ow - ox0 : m;
        float *obase = out + img * oh * ow * ldo;
        for (int64_t q = 0; q < cout; q += VW) {
            const int64_t nq = cout - q < VW ? cout - q : VW;
            const float *src = mm + tt * cout + q;
            VT x[NB_WINO_MAXA][NB_WINO_MAXA], t1[NB_WINO_MAXA][NB_WINO_MAXA];
            WINO_UNROLL
            for (int64_t k = 0; k < a; k++)
                WINO_UNROLL
                for (int64_t j = 0; j < a; j++) x[k][j] = VLD(src + (k * a + j) * mstride, nq);
            WINO_UNROLL
            for (int64_t i = 0; i < m; i++) {
                WINO_UNROLL
                for (int64_t j = 0; j < a; j++) {
                    VT s = {0};
                    WINO_UNROLL
                    for (int64_t k = 0; k < a; k++) {
                        const float b = at[i * a + k];
                        if (b != 0) s += b * x[k][j];
                    }
                    t1[i][j] = s;
                }
            }
            const VT bv = VLD(bias + q, nq);
            if (mi == m && mj == m) {
                // a whole tile: constant bounds, so the specialised copies
                // unroll it and keep t1 in registers
                WINO_UNROLL
                for (int64_t i = 0; i < m; i++) {
                    WINO_UNROLL
                    for (int64_t j = 0; j < m; j++)
                        WINO_NAME(wino_out_px)(t1[i], a, at, j, &bv, relu, obase + ((oy0 + i) * ow + ox0 + j) * ldo + q, nq);
                }
                continue;
            }
            for (int64_t i = 0; i < mi; i++) {
                for (int64_t j = 0; j < mj; j++)
                    WINO_NAME(wino_out_px)(t1[i], a, at, j, &bv, relu, obase + ((oy0 + i) * ow + ox0 + j) * ldo + q, nq);
            }
        }
    }
}

INLINE void WINO_NAME(wino_dy_body)(const float *dy, int64_t oh, int64_t ow, int64_t c,
                         int64_t th, int64_t tw, const int64_t m, const int64_t a, const float *at,
                         int64_t t0, int64_t nt, const int64_t ys, float *yh) {
    const int64_t plane = th * tw;
    for (int64_t tt = 0; tt < nt; tt++) {
        const int64_t t = t0 + tt;
        const int64_t img = t / plane, r = t % plane;
        const int64_t oy0 = (r / tw) * m, ox0 = (r % tw) * m;
        const int64_t mi = oh - oy0 < m ? oh - oy0 : m, mj = ow - ox0 < m ? ow - ox0 : m;
        const float *base = dy + img * oh * ow * c;
        for (int64_t q = 0; q < c; q += VW) {
            const int64_t nq = c - q < VW ? c - q : VW;
            VT d[NB_WINO_MAXA][NB_WINO_MAXA], t1[NB_WINO_MAXA][NB_WINO_MAXA];
WINO_UNROLL
            for (int64_t i = 0; i < m; i++) {
WINO_UNROLL
                for (int64_t j = 0; j < m; j++) {
                    d[i][j] = (i < mi && j < mj) ? VLD(base + ((oy0 + i) * ow + ox0 + j) * c + q, nq) : (VT){0};
                }
            }
            // t1 = A D: t1[ξ][j] = Σ_i Aᵀ[i][ξ]·D[i][j]
WINO_UNROLL
            for (int64_t xi = 0; xi < a; xi++) {
WINO_UNROLL
                for (int64_t j = 0; j < m; j++) {
                    VT s = {0};
WINO_UNROLL
                    for (int64_t i = 0; i < m; i++) {
                        const float b = at[i * a + xi];
                        if (b != 0) s += b * d[i][j];
                    }
                    t1[xi][j] = s;
                }
            }
            float *o = yh + tt * c + q;
WINO_UNROLL
            for (int64_t xi = 0; xi < a; xi++) {
WINO_UNROLL
                for (int64_t nu = 0; nu < a; nu++) {
                    VT s = {0};
WINO_UNROLL
                    for (int64_t j = 0; j < m; j++) {
                        const float b = at[j * a + nu];
                        if (b != 0) s += b * t1[xi][j];
                    }
                    VST(o + (xi * a + nu) * ys, s, nq);
                }
            }
        }
    }
}

