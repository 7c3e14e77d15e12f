"""One package-``__init__`` style: every public name resolves, lazily, and ``import recsim_personas`` stays cheap."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

PACKAGES = [
    "recsim_personas.agents", "recsim_personas.baselines", "recsim_personas.data", "recsim_personas.eval",
    "recsim_personas.memory", "recsim_personas.memory.backends", "recsim_personas.training",
]


@pytest.mark.parametrize("name", PACKAGES)
def test_every_public_name_resolves_to_its_home(name: str) -> None:
    package = importlib.import_module(name)
    assert package.__all__, f"{name} exports nothing"
    for attr in package.__all__:
        value = getattr(package, attr)
        home = getattr(value, "__module__", None)
        if home is not None and home.startswith("recsim_personas") and not isinstance(value, (str, tuple, dict)):
            # the name is defined below this package (its one home), not re-exported from elsewhere
            assert home.startswith(name), f"{name}.{attr} lives in {home}"
    assert set(package.__all__) <= set(dir(package))


@pytest.mark.parametrize("name", PACKAGES)
def test_unknown_name_says_what_was_meant(name: str) -> None:
    package = importlib.import_module(name)
    first = sorted(package.__all__)[0]
    with pytest.raises(AttributeError, match=f"has no attribute {first[:-1]!r}"):
        getattr(package, first[:-1])


def test_importing_the_packages_loads_no_heavy_library() -> None:
    code = (
        "import sys; import recsim_personas; "
        + "; ".join(f"import {p}" for p in PACKAGES)
        + "; heavy = [m for m in ('torch', 'pandas', 'transformers', 'peft', 'sklearn') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "", f"importing the packages loaded {out.stdout.strip()}"
