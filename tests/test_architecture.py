"""The package's shape, checked from its source: stages import one way, no module reaches
into another's private names, no module grows past ~500 lines.

The stages follow the data path (WORKSPACE.md): data -> model -> training, and
model -> embedding -> export / evaluation -> the CLI, on top of a few base modules that
every stage may use (configuration, run-directory layout, atomic writes, ...).
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "msss_tf"
MAX_LINES = 500

BASE = {"config", "atomic", "lazy", "outputs", "packages", "runs", "rundir", "tflite_file",
        "tflite_metadata", "third_party", "__init__"}
# stage -> the stages its modules may import (besides the base modules and itself)
MAY_IMPORT = {
    "base": set(),
    "data": set(),
    "model": {"data"},
    "training": {"data", "model"},
    "embedding": {"data", "model"},
    "hear": {"data", "model", "embedding"},
    "export": {"data", "model", "embedding"},
    "evaluation": {"data", "model", "embedding", "export"},
    "demo": {"data", "model", "training", "embedding", "export", "evaluation"},
    "bench": {"data", "model", "training", "embedding", "export", "evaluation"},
    "cli": {"data", "model", "training", "embedding", "export", "evaluation", "hear",
            "demo", "bench"},
}


def _modules(folder):
    for path in sorted(folder.rglob("*.py")):
        if "third_party" not in path.parts:
            yield path


def _module_name(path):
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path):
    """(line, imported module, imported name or None) for every import in the file,
    function-level ones included; relative imports resolved."""
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, None
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                module = ".".join(base + ([module] if module else []))
            for alias in node.names:
                yield node.lineno, module, alias.name


def _stage(module):
    """The stage of a dotted msss_tf module name."""
    first = module.split(".")[1] if "." in module else "__init__"
    return "base" if first in BASE else first


def test_every_module_belongs_to_a_known_stage():
    unknown = {_stage(_module_name(p)) for p in _modules(PACKAGE)} - set(MAY_IMPORT)
    assert not unknown, f"add these top-level modules to a stage in {__file__}: {unknown}"


def test_stages_import_one_way():
    wrong = []
    for path in _modules(PACKAGE):
        stage = _stage(_module_name(path))
        allowed = MAY_IMPORT[stage] | {stage, "base"}
        for line, module, name in _imports(path):
            if module.startswith("experiments"):
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {module} (a harness)")
            if not module.startswith("msss_tf"):
                continue
            target = module
            if module == "msss_tf" and name and any(
                    (PACKAGE / n).exists() for n in (name, f"{name}.py")):
                target = f"msss_tf.{name}"  # `from msss_tf import submodule`
            if _stage(target) not in allowed:
                wrong.append(f"{path.relative_to(ROOT)}:{line} ({stage}) imports {target} "
                             f"({_stage(target)})")
    assert not wrong, "imports against the data path:\n" + "\n".join(wrong)


def test_inference_never_imports_the_training_job():
    for path in _modules(PACKAGE):
        if _stage(_module_name(path)) in ("embedding", "hear", "export", "evaluation"):
            for line, module, _ in _imports(path):
                assert not module.startswith("msss_tf.training"), f"{path}:{line}"


@pytest.mark.parametrize("folder", ["msss_tf", "experiments", "tests"])
def test_no_module_imports_another_modules_private_names(folder):
    """`from msss_tf.x import _y`, `import msss_tf._x` and `module._y` on an imported
    project module are all reaching into another module's insides."""
    wrong = []
    for path in _modules(ROOT / folder):
        tree = ast.parse(path.read_text(), str(path))
        aliases = set()  # names bound to project modules in this file
        for line, module, name in _imports(path):
            ours = module.split(".")[0] in ("msss_tf", "experiments")
            if not ours:
                continue
            private = [p for p in module.split(".") if p.startswith("_") and p != "__init__"]
            if private or (name and name.startswith("_") and not name.startswith("__")):
                wrong.append(f"{path.relative_to(ROOT)}:{line} {module} {name or ''}")
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(("msss_tf", "experiments")):
                aliases.update(a.asname or a.name for a in node.names)
            elif isinstance(node, ast.Import):
                aliases.update(a.asname for a in node.names
                               if a.asname and a.name.startswith(("msss_tf", "experiments")))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                    and not node.attr.startswith("__") and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and node.value.id[:1].islower()):
                wrong.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value.id}.{node.attr}")
    assert not wrong, "private names used across modules:\n" + "\n".join(wrong)


def test_no_module_over_the_size_limit():
    """Vendored code (msss_tf/third_party) is exempt: it is not ours to split."""
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines())
             for folder in ("msss_tf", "experiments") for p in _modules(ROOT / folder)}
    over = {path: n for path, n in sizes.items() if n > MAX_LINES}
    assert not over, f"modules over {MAX_LINES} lines: {over}"


def test_old_keras_files_load_after_the_modules_moved(tmp_path):
    """A .keras file records each class's module; files saved before the model moved
    into `msss_tf.model` name `msss_tf.model`, `msss_tf.losses`, ... They still load:
    every class is registered under its `msss_tf>` name, which Keras looks up first."""
    import json
    import zipfile

    import keras

    from msss_tf.config import MSSSConfig
    from msss_tf.model import MSSSModel

    config = MSSSConfig(width_coefficient=0.25, depth_coefficient=0.25)
    model = MSSSModel(config)
    new = tmp_path / "new.keras"
    model.save(new)
    old_names = {"msss_tf.model.msss_model": "msss_tf.model", "msss_tf.model.losses": "msss_tf.losses",
                 "msss_tf.model.heads": "msss_tf.heads", "msss_tf.model.encoder": "msss_tf.encoder",
                 "msss_tf.model.frontend": "msss_tf.frontend",
                 "msss_tf.model.similarity": "msss_tf.similarity"}
    old = tmp_path / "old.keras"
    with zipfile.ZipFile(new) as src, zipfile.ZipFile(old, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == "config.json":
                text = data.decode()
                for now, before in old_names.items():
                    text = text.replace(f'"{now}"', f'"{before}"')
                assert '"msss_tf.model"' in text and '"msss_tf.model.msss_model"' not in text
                data = text.encode()
            dst.writestr(item, data)
    loaded = keras.saving.load_model(old, compile=False)
    assert type(loaded) is MSSSModel
    for a, b in zip(model.weights, loaded.weights):
        assert a.shape == b.shape
        assert (keras.ops.convert_to_numpy(a) == keras.ops.convert_to_numpy(b)).all()


@pytest.mark.parametrize("package", ["msss_tf", "msss_tf.data", "msss_tf.model", "msss_tf.training",
                                     "msss_tf.embedding", "msss_tf.evaluation"])
def test_no_public_name_is_also_a_submodule(package):
    """`package.x` would be the function before `import package.x` and the module after."""
    import importlib

    folder = ROOT / package.replace(".", "/")
    submodules = {p.stem for p in folder.glob("*.py")} | {p.name for p in folder.iterdir() if p.is_dir()}
    clash = set(importlib.import_module(package).__all__) & submodules
    assert not clash, f"{package} exports names of its submodules: {clash}"
