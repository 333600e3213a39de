import pytest

from kernel.config import SETTINGS, ConfigError, from_environ


def test_defaults():
    config = from_environ({})
    assert config == {name: default for name, (default, _) in SETTINGS.items()}
    assert config["KERNEL_SSE_PING_S"] == 15.0
    assert config["KERNEL_MAX_BODY_BYTES"] == 10 * 1024 * 1024
    assert config["KERNEL_DATA_DIR"] == "./data"


@pytest.mark.parametrize(
    "name, raw, expected",
    [
        ("KERNEL_SSE_PING_S", "2.5", 2.5),
        ("KERNEL_MAX_BODY_BYTES", "1024", 1024),
        ("KERNEL_UPSTREAM_URL", " http://x/v1 ", "http://x/v1"),
        ("KERNEL_UPSTREAM_TIMEOUT_S", "", 120.0),
    ],
)
def test_parsing(name, raw, expected):
    assert from_environ({name: raw})[name] == expected


@pytest.mark.parametrize(
    "name, raw",
    [
        ("KERNEL_SSE_PING_S", "soon"),
        ("KERNEL_SSE_PING_S", "0"),
        ("KERNEL_MAX_BODY_BYTES", "-1"),
        ("KERNEL_MAX_BODY_BYTES", "1.5"),
    ],
)
def test_invalid_values_name_the_setting(name, raw):
    with pytest.raises(ConfigError, match=name):
        from_environ({name: raw})
