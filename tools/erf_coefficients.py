"""Derive the polynomial coefficients of src/verf.h (needs mpmath: pip install mpmath).

    python tools/erf_coefficients.py

verf.h computes erf(x) for a = |x| as
    a < 1:  erf(a) = a + a Q(t),            Q ~ erf(a) / a - 1, t = a^2 in [0, 1]
    a >= 1: erf(a) = 1 - exp(-a^2) G(s),    G ~ erfc(a) exp(a^2), s = k v + c,
                                            v = 1/a in [v_min, 1] mapped onto [-1, 1]
(v_min = 1/6 for double: erfc(6) < 2^-54, so erf rounds to 1 from there; 1/4 for
float, past erfc(4) < 2^-25). Q holds erf(a) / a less its leading 1, so that the
rounding of its constant term, 2 / sqrt(pi) - 1, costs 8 times less.

Each polynomial is a weighted minimax fit: Q minimises the relative error of
erf(a), G the absolute error of erfc(a), both in ulps of numbers just below 1.
The fit is Lawson's algorithm (least squares reweighted by each point's error,
which converges to the minimax polynomial) on Chebyshev points of the
variable, in 60-digit arithmetic. The coefficients are rounded to the element
type one at a time from the constant term up, the remaining ones fitted again
after each rounding, so that the later ones absorb the earlier ones' rounding.
The script prints the tables, highest degree first (Horner's order), and each
polynomial's error with its rounded coefficients.
"""

from __future__ import annotations

import struct

import mpmath as mp

mp.mp.dps = 60

# (element type, degree of Q, degree of G, v_min, bits of the significand)
TYPES = [("double", 12, 18, mp.mpf(1) / 6, 53), ("float", 6, 7, mp.mpf(1) / 4, 24)]


def lawson_fit(target, weight, points, powers, iterations=12):
    """Coefficients c_j of sum_j c_j u^powers[j] minimising
    max_i |weight_i (sum_j c_j u_i^powers[j] - target_i)| over the points u_i."""
    n, m = len(powers), len(points)
    basis = [[u ** p for p in powers] for u in points]
    lam = [mp.mpf(1) / m] * m
    best, best_error = None, None
    for _ in range(iterations):
        gram, rhs = mp.matrix(n, n), mp.matrix(n, 1)
        for i in range(m):
            q = lam[i] * weight[i] ** 2
            for a in range(n):
                qa = q * basis[i][a]
                rhs[a] += qa * target[i]
                for b in range(a, n):
                    gram[a, b] += qa * basis[i][b]
        for a in range(n):
            for b in range(a):
                gram[a, b] = gram[b, a]
        c = mp.lu_solve(gram, rhs)
        errors = [weight[i] * abs(mp.fsum(c[j] * basis[i][j] for j in range(n)) - target[i])
                  for i in range(m)]
        if best_error is None or max(errors) < best_error:
            best, best_error = [c[j] for j in range(n)], max(errors)
        total = mp.fsum(lam[i] * errors[i] for i in range(m))
        lam = [lam[i] * errors[i] / total for i in range(m)]
    return best, best_error


def rounded(x, bits: int) -> float:
    value = float(x)
    return struct.unpack("f", struct.pack("f", value))[0] if bits == 24 else value


def rounded_fit(f, weight, lo, hi, degree, bits, m=200):
    """The coefficients of u^0 .. u^degree, rounded to `bits`, and the error."""
    points = [(lo + hi) / 2 - (hi - lo) / 2 * mp.cos(mp.pi * k / (m - 1)) for k in range(m)]
    target = [f(u) for u in points]
    w = [weight(u) for u in points]
    fixed = []
    for j in range(degree + 1):
        rest = [t - mp.fsum(c * u ** i for i, c in enumerate(fixed))
                for t, u in zip(target, points)]
        c, error = lawson_fit(rest, w, points, list(range(j, degree + 1)))
        fixed.append(mp.mpf(rounded(c[0], bits)))
    return [float(c) for c in fixed], error


def literal(x: float, ctype: str) -> str:
    if ctype == "double":
        return repr(x)
    text = f"{x:.9g}"
    return (text if "e" in text or "." in text else text + ".0") + "f"


def main() -> None:
    def small(t):
        return mp.erf(mp.sqrt(t)) / mp.sqrt(t) if t > 0 else 2 / mp.sqrt(mp.pi)

    for ctype, deg_p, deg_g, v_min, bits in TYPES:
        ulp = mp.mpf(2) ** -bits   # the spacing of numbers just below 1
        k = 2 / (1 - v_min)
        c = -(1 + v_min) / (1 - v_min)

        def scaled_erfc(s):
            v = (s - c) / k
            return mp.erfc(1 / v) * mp.exp(1 / v ** 2)

        p, err_p = rounded_fit(lambda t: small(t) - 1, lambda t: 1 / (small(t) * ulp),
                               mp.mpf(0), mp.mpf(1), deg_p, bits)
        g, err_g = rounded_fit(scaled_erfc, lambda s: mp.exp(-(k / (s - c)) ** 2) / ulp,
                               mp.mpf(-1), mp.mpf(1), deg_g, bits)
        print(f"/* {ctype}: Q of degree {deg_p}, max relative error {mp.nstr(err_p, 2)} ulp; "
              f"G of degree {deg_g}, max erfc error {mp.nstr(err_g, 2)} ulp of 1 */")
        print(f"k = {literal(rounded(k, bits), ctype)}, c = {literal(rounded(c, bits), ctype)},"
              f" v_min = {literal(rounded(v_min, bits), ctype)}")
        for name, coefficients in (("Q", p), ("G", g)):
            print(f"{name}: " + ", ".join(literal(x, ctype) for x in reversed(coefficients)))
        print()


if __name__ == "__main__":
    main()
