"""95% intervals for error rates (exact binomial, Clopper and Pearson 1934), in pure Python.

Every error rate this project reports carries one. With 0 errors the two-sided interval's lower end is 0,
so the figure quoted is the one-sided upper bound, 1 - 0.05^(1/n) (about 3/n: "< 0.015%" for 0 in 20 000).
"""

from __future__ import annotations

import math


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the regularized incomplete beta function (modified Lentz's method)."""
    tiny, eps = 1e-300, 1e-15
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 10_000):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return result


def beta_cdf(x: float, a: float, b: float) -> float:
    """I_x(a, b), the CDF of Beta(a, b) at x."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, 1.0 - x) / b


def beta_quantile(q: float, a: float, b: float) -> float:
    """The x with I_x(a, b) = q, by bisection (monotone, 100 halvings: far below any reported digit)."""
    lo, hi = 0.0, 1.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if beta_cdf(mid, a, b) < q:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def error_interval(errors: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """(low, high) bounds on the error rate behind `errors` wrong of `n`.

    Exact two-sided Clopper-Pearson; for 0 errors (0, the one-sided upper bound) and for n errors (the
    one-sided lower bound, 1).
    """
    if n <= 0 or not 0 <= errors <= n:
        raise ValueError(f"need 0 <= errors <= n and n > 0, got errors={errors}, n={n}")
    alpha = 1.0 - confidence
    if errors == 0:
        return 0.0, 1.0 - alpha ** (1.0 / n)
    if errors == n:
        return alpha ** (1.0 / n), 1.0
    low = beta_quantile(alpha / 2, errors, n - errors + 1)
    high = beta_quantile(1 - alpha / 2, errors + 1, n - errors)
    return low, high


def error_count(fraction: float, n: int) -> int:
    """How many of `n` were wrong, from the fraction a report stores (model.evaluate.error_report)."""
    return round(fraction * n)


def percent(fraction: float) -> str:
    """A rate in percent: two decimals, or two significant digits below 0.1%, always positional ("0.000047%",
    never "4.7e-05%" nor a bare "0.00%")."""
    value = 100 * fraction
    if value >= 0.1:
        return f"{value:.2f}%"
    short = f"{value:.2g}"
    if "e" in short:  # below 1e-4 %: the same two digits, written out
        rounded = float(short)
        short = f"{rounded:.{1 - math.floor(math.log10(rounded))}f}".rstrip("0")
    return f"{short}%"


def rate_with_interval(errors: int, n: int, *, bounds: tuple[float, float] | None = None) -> str:
    """'0/20000 (< 0.015%)' or '3/20000 = 0.015% (0.0031-0.044%)': a table cell's count, rate and interval.

    `bounds` is error_interval(errors, n) where the caller already has it (it is not computed again)."""
    low, high = bounds if bounds is not None else error_interval(errors, n)
    if errors == 0:
        return f"0/{n} (< {percent(high)})"
    return f"{errors}/{n} = {percent(errors / n)} ({percent(low)[:-1]}-{percent(high)})"
