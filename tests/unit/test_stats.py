"""The 95% intervals every reported error rate carries."""

import math

import pytest

from model.stats import beta_cdf, error_interval, percent, rate_with_interval


def test_zero_errors_give_the_one_sided_bound_the_results_quote():
    low, high = error_interval(0, 20_000)
    assert low == 0.0 and 0.000149 < high < 0.000150  # "< 0.015%"
    assert rate_with_interval(0, 520_000) == "0/520000 (< 0.00058%)"


@pytest.mark.parametrize(
    ("errors", "n", "low", "high"),
    [
        (5, 10, 0.187086, 0.812914),  # the textbook symmetric case
        (1, 20_000, 1.2658e-6, 2.7853e-4),
        (50, 100, 0.398321, 0.601679),
    ],
)
def test_clopper_pearson_bounds_match_known_values(errors, n, low, high):
    got_low, got_high = error_interval(errors, n)
    assert math.isclose(got_low, low, rel_tol=1e-3) and math.isclose(got_high, high, rel_tol=1e-3)


def test_the_beta_cdf_is_exact_where_it_has_a_closed_form():
    for x in (0.1, 0.5, 0.9):
        assert math.isclose(beta_cdf(x, 1, 1), x)
        assert math.isclose(beta_cdf(x, 2, 1), x * x)
        assert math.isclose(beta_cdf(x, 1, 3), 1 - (1 - x) ** 3)


def test_all_errors_and_bad_counts():
    assert error_interval(10, 10)[1] == 1.0
    with pytest.raises(ValueError):
        error_interval(3, 2)


def test_a_small_rate_and_its_bounds_keep_two_significant_digits_never_zero():
    assert rate_with_interval(1, 20_000) == "1/20000 = 0.005% (0.00013-0.028%)"
    assert rate_with_interval(1, 2286) == "1/2286 = 0.044% (0.0011-0.24%)"
    assert rate_with_interval(439, 60_000) == "439/60000 = 0.73% (0.67-0.80%)"
    assert rate_with_interval(0, 20_000) == "0/20000 (< 0.015%)"
    # the served repository's K 1..26 total: its lower bound written out, not "4.7e-05"
    assert rate_with_interval(2, 520_000) == "2/520000 = 0.00038% (0.000047-0.0014%)"
    assert percent(1e-7) == "0.00001%" and percent(0.0) == "0%"


def test_a_cell_given_its_interval_prints_that_interval_and_the_same_text_as_computing_it():
    assert rate_with_interval(3, 20_000, bounds=error_interval(3, 20_000)) == rate_with_interval(3, 20_000)
    assert rate_with_interval(3, 20_000, bounds=(0.0001, 0.0002)) == "3/20000 = 0.015% (0.01-0.02%)"
    assert rate_with_interval(0, 20_000, bounds=(0.0, 0.0003)) == "0/20000 (< 0.03%)"
