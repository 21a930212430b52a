import pytest

from citystream.processors.sensors.aqi import band_of, thai_aqi

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("pm25", "aqi"), [
    (0.0, 0), (15.0, 25), (15.1, 26), (25.0, 50), (25.1, 51), (37.5, 100), (37.6, 101), (75.0, 200),
    (75.1, 201), (7.5, 12), (20.05, 38), (56.3, 150),
])
def test_band_edges_and_interpolation(pm25: float, aqi: int) -> None:
    assert thai_aqi(pm25) == aqi


@pytest.mark.parametrize(("pm25", "colour"), [
    (3.0, "blue"), (15.04, "blue"), (18.0, "green"), (30.0, "yellow"), (50.0, "orange"), (120.0, "red"),
])
def test_band_colours(pm25: float, colour: str) -> None:
    assert band_of(pm25).colour == colour


def test_monotonic_over_the_whole_range() -> None:
    values = [thai_aqi(x / 10) for x in range(0, 3000)]
    assert values == sorted(values)
    assert thai_aqi(150.0) > 201


def test_negative_is_an_error() -> None:
    with pytest.raises(ValueError):
        thai_aqi(-1.0)
