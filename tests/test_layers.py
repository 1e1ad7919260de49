"""The package's architecture as a test: layers imported only downward, no import cycles, no private names borrowed
across modules, imports at the top of modules (a few deliberate lazy ones, to keep light commands free of torch)."""
import ast
from pathlib import Path

PKG = Path(__file__).parents[1] / "audiochat"
LAYERS = ["core", "sim", "codec", "model", "runs", "training", "serve", "eval", "cli"]  # each imports only from its left
# import statements of the package inside functions, each deliberate: the command and the web app answer `--help`
# without torch (tests/test_conventions.py, tests/test_app.py), and the agents and dataset records stay free of
# torch (the toolbox and audio I/O import it)
LAZY_IMPORTS = {"serve.app": 3, "sim.copilot": 1, "sim.data": 3, "sim.data_export": 1}


def _name(path: Path) -> str: return ".".join(path.relative_to(PKG).with_suffix("").parts)


MODULES = {_name(p): p for p in PKG.rglob("*.py") if p.name not in ("_modidx.py", "__main__.py", "__init__.py")}


def _lazy_statements(module: str) -> int:
    "The import statements of the package's own modules inside functions of `module`."
    tree = ast.parse(MODULES[module].read_text())
    top = {id(n) for n in tree.body}
    return sum(1 for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and id(n) not in top
               and (n.level or (n.module or "").startswith("audiochat")))


def _imports(module: str) -> list[tuple[str, str | None, bool]]:
    "(imported module, imported name or None, at module level) for every import of the package inside `module`."
    tree = ast.parse(MODULES[module].read_text())
    top, out = {id(n) for n in tree.body}, []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level: source = ".".join(module.split(".")[:-node.level] + ([node.module] if node.module else []))
            elif (node.module or "").startswith("audiochat."): source = node.module[len("audiochat."):]
            else: continue
            for a in node.names:  # `from audiochat.sim import tools` imports a module
                target = f"{source}.{a.name}" if f"{source}.{a.name}" in MODULES else source
                out.append((target, a.name, id(node) in top))
        elif isinstance(node, ast.Import):
            out += [(a.name[len("audiochat."):], None, id(node) in top) for a in node.names if a.name.startswith("audiochat.")]
    return out


def _layer(module: str) -> int: return LAYERS.index(module.split(".")[0])


def test_every_module_sits_in_a_layer():
    assert {m.split(".")[0] for m in MODULES} == set(LAYERS)


def test_layers_import_only_downward():
    backward = [(m, t) for m in MODULES for t, _, _ in _imports(m) if t != "" and _layer(t) > _layer(m)]
    assert backward == []


def test_serving_never_imports_training():
    "A deployed model reads its run (runs.config, runs.checkpoints) without the training loop, streams or previews."
    borrowed = [(m, t) for m in MODULES if m.startswith("serve.") for t, _, _ in _imports(m) if t.startswith("training")]
    assert borrowed == []


def test_no_import_cycles():
    graph = {m: {t for t, _, _ in _imports(m) if t in MODULES and t != m} for m in MODULES}
    done, path = set(), []

    def visit(m):
        assert m not in path, f"import cycle: {' -> '.join(path[path.index(m):] + [m])}"
        if m in done: return
        path.append(m)
        for t in sorted(graph[m]): visit(t)
        path.pop(); done.add(m)

    for m in sorted(graph): visit(m)


def test_no_private_names_imported_across_modules():
    private = [(m, t, n) for m in MODULES for t, n, _ in _imports(m) if n and n.startswith("_") and t != m]
    assert private == []


def test_imports_sit_at_the_top():
    lazy = {m: n for m in MODULES if (n := _lazy_statements(m))}
    assert all(n <= LAZY_IMPORTS.get(m, 0) for m, n in lazy.items()), lazy


def test_lines_fit_in_100_characters():
    "Every line of the package in 100 characters, but the `__all__` lists nbdev writes (120 wide)."
    long = []
    for m, path in MODULES.items():
        in_all = False
        for i, line in enumerate(path.read_text().splitlines(), 1):
            in_all = in_all or line.startswith("__all__ = [")
            if not in_all and len(line) > 100: long.append(f"{m}:{i}")
            if in_all and line.rstrip().endswith("]"): in_all = False
    assert long == []


# the course's core track (README, 00_index): the method first, each notebook importing only the ones before it
CORE_TRACK = ["01_audio", "01a_io", "01b_presets", "02_scene", "02d_edits", "10_diffusion", "08_transformer", "09_sct",
              "07_tokenizer", "11_forcing"]


def _notebook_imports() -> tuple[dict, dict]:
    "(notebook -> the package modules its code cells import, module -> the notebook that exports it)."
    import json
    import re
    nbs, made = {}, {}
    for p in sorted((PKG.parent / "nbs").glob("*.ipynb")):
        code = "\n".join("".join(c["source"]) for c in json.loads(p.read_text())["cells"] if c["cell_type"] == "code")
        if m := re.search(r"#\| default_exp (\S+)", code): made[m.group(1)] = p.stem
        nbs[p.stem] = set(re.findall(r"^\s*(?:from|import) audiochat\.([\w.]+)", code, re.M))
    return nbs, made


def test_core_track_uses_only_what_it_has_taught():
    nbs, made = _notebook_imports()
    for i, name in enumerate(CORE_TRACK):
        needs = {made[m] for m in nbs[name] if m in made} - {name}
        assert needs <= set(CORE_TRACK[:i]), f"{name} imports {sorted(needs - set(CORE_TRACK[:i]))}, outside the track so far"


def test_no_notebook_uses_what_a_later_one_teaches():
    nbs, made = _notebook_imports()
    later = {n: sorted(made[m] for m in mods if m in made and made[m] > n) for n, mods in nbs.items()}
    assert {n: v for n, v in later.items() if v} == {}


def test_prerequisites_name_the_notebooks_imported():
    "Each notebook's Before-you-start line links exactly the notebooks whose modules its code imports."
    import json
    import re
    nbs, made = _notebook_imports()
    wrong = {}
    for p in sorted((PKG.parent / "nbs").glob("*.ipynb")):
        md = ["".join(c["source"]) for c in json.loads(p.read_text())["cells"] if c["cell_type"] == "markdown"]
        before = next((s for s in md if s.startswith("**Before you start.**")), None)
        if before is None: continue
        links = set(re.findall(r"\[(\w+)\]\(\1\.ipynb\)", before.split("What you will see")[0]))
        want = {made[m] for m in nbs[p.stem] if m in made} - {p.stem}
        if links != want: wrong[p.stem] = sorted(links ^ want)
    assert wrong == {}


def test_functions_fit_on_a_screen():
    "No function or method of the package is longer than 60 lines (docstring included)."
    long = [f"{m}.{n.name} ({n.end_lineno - n.lineno + 1} lines)" for m, path in MODULES.items()
            for n in ast.walk(ast.parse(path.read_text()))
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > 60]
    assert long == []


def test_public_names_have_one_home():
    "A public function or class is defined in one module (methods added with fastcore's @patch are the class's own)."
    homes = {}
    for m, path in MODULES.items():
        for n in ast.parse(path.read_text()).body:
            patched = any("patch" in ast.unparse(d) for d in getattr(n, "decorator_list", []))
            if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and not n.name.startswith("_") and not patched:
                homes.setdefault(n.name, []).append(m)
    assert {k: v for k, v in homes.items() if len(v) > 1} == {}


def test_scripts_import_names_the_package_has():
    "Every `from audiochat.X import Y` in the scripts (benchmarks/, docs/) names a module and a name that exist."
    import importlib

    missing = []
    for path in sorted([*PKG.parent.glob("benchmarks/*.py"), *PKG.parent.glob("docs/*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("audiochat"):
                module = importlib.import_module(node.module)
                missing += [f"{path.name}: {node.module}.{a.name}" for a in node.names if not hasattr(module, a.name)]
    assert missing == []
