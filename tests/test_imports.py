"""One import graph: the package's modules stand on floors, each importing only modules on the floors below it, with
no circle; imports sit at the top of each module (the optional dependencies excepted, each behind one helper); and the
command line's help and `noisekd data check` start without torch or fastai."""
import ast, json, subprocess, sys
from collections import defaultdict
from pathlib import Path
import pytest
from conftest import ROOT

PKG = ROOT/'noisekd'
# The floors, bottom first. A module may import only modules on lower floors: a new module must be placed here.
FLOORS = [
    ['noisekd', 'base', 'bench_options'],   # no torch: errors, checks, files; the benchmark's options
    ['core', 'download', 'scales'],         # seeds and devices (torch); the datasets' catalogue and archives, scales and tables (no torch)
    ['data'],
    ['models', 'losses'],
    ['callbacks', 'attacks'],
    ['corruptions'],
    ['robustness'],
    ['evaluate', 'train'],
    ['experiments', 'bench'],
    ['cluster', 'report'],
    ['evidence', 'commands', 'check'],      # what a CPU can show; the commands; `noisekd check`, every path on this machine
    ['all', 'cli'],                         # everything at once; the command line, which imports a sub-command's module when it runs
]
LIGHT = ['base', 'bench_options', 'download', 'scales', 'cli']   # what `noisekd --help` and `noisekd data check` load: no torch, no fastai
HEAVY = {'torch', 'torchvision', 'fastai', 'fastprogress', 'pandas', 'matplotlib', 'papermill', 'sklearn', 'scipy'}
OPTIONAL = {'dask', 'distributed', 'dask_jobqueue', 'torchattacks', 'timm', 'nbconvert'}   # extras: imported only inside a helper
LAZY_OK = {'papermill'}   # a required dependency imported where a notebook is executed or read: 0.75 s after torch, paid by every run's kernel otherwise

def modules() -> dict:
    "{module name: parsed source} of every module of the package."
    return {('noisekd' if p.stem == '__init__' else p.stem): ast.parse(p.read_text(), str(p))
            for p in sorted(PKG.glob('*.py')) if p.stem != '_modidx'}

def _targets(node) -> list:
    "The top-level package names (for a third-party import) or `noisekd.X` names an import statement names."
    if isinstance(node, ast.Import): return [a.name for a in node.names]
    if node.level: return [f"noisekd.{node.module}" if node.module else 'noisekd']
    if node.module == 'noisekd': return [f"noisekd.{a.name}" for a in node.names]
    return [node.module]

def imports(tree) -> tuple[list, list]:
    "(top-level imports, imports inside a function) of a module, each as (name, function or None, line)."
    top, inner = [], []
    def walk(node, fn):
        for ch in ast.iter_child_nodes(node):
            if isinstance(ch, (ast.Import, ast.ImportFrom)):
                for t in _targets(ch): (inner if fn else top).append((t, fn, ch.lineno))
            walk(ch, ch.name if isinstance(ch, (ast.FunctionDef, ast.AsyncFunctionDef)) else fn)
    walk(tree, None)
    return top, inner

def _own(name):
    "`noisekd.data` -> 'data', `noisekd` -> 'noisekd', a third-party name -> None."
    return 'noisekd' if name == 'noisekd' else name.split('.', 1)[1].split('.')[0] if name.startswith('noisekd.') else None

def cli_commands(tree) -> dict:
    "The modules the command line imports when a sub-command runs: its `COMMANDS` table."
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, 'id', None) == 'COMMANDS' for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError("noisekd/cli.py has no COMMANDS table")

def graph() -> dict:
    "{module: set of the package's modules it imports}: top-level imports, and the command line's sub-command modules."
    mods, g = modules(), defaultdict(set)
    for m, tree in mods.items():
        g[m] |= {o for t, _, _ in imports(tree)[0] if (o := _own(t)) and o != m}
    g['cli'] |= {_own(v) for v in cli_commands(mods['cli']).values()}
    return {m: g[m] for m in mods}

def test_every_module_is_on_a_floor():
    placed = [m for f in FLOORS for m in f]
    assert len(placed) == len(set(placed)), "a module is on two floors"
    assert sorted(placed) == sorted(modules()), f"place {sorted(set(modules()) - set(placed))} on a floor (or remove {sorted(set(placed) - set(modules()))})"

def test_no_function_level_import_of_the_package():
    "Every `noisekd` import is at the top of its module, where a reader sees what the module depends on."
    found = [f"noisekd/{m}.py:{line}: {t} inside {fn}()" for m, tree in modules().items() for t, fn, line in imports(tree)[1] if _own(t)]
    assert not found, "imports of noisekd modules inside functions:\n" + '\n'.join(found)

def test_no_circle_and_no_upward_import():
    g, floor = graph(), {m: i for i, f in enumerate(FLOORS) for m in f}
    up = [f"{m} (floor {floor[m]}) imports {d} (floor {floor[d]})" for m, ds in g.items() for d in sorted(ds) if floor[d] >= floor[m]]
    assert not up, "imports that do not go down a floor:\n" + '\n'.join(up)
    state, path = {}, []                                # a depth-first search finds a circle even without the floors
    def visit(m):
        state[m] = 'open'; path.append(m)
        for d in sorted(g[m]):
            if state.get(d) == 'open': raise AssertionError("import circle: " + ' -> '.join(path[path.index(d):] + [d]))
            if d not in state: visit(d)
        state[m] = 'done'; path.pop()
    for m in g:
        if m not in state: visit(m)

def test_third_party_imports_at_the_top_but_the_optional_ones():
    "An optional dependency is imported only inside functions, by one helper per module; a required one at the top (papermill excepted)."
    helpers, late = defaultdict(set), []
    for m, tree in modules().items():
        top, inner = imports(tree)
        assert not {t.split('.')[0] for t, _, _ in top} & OPTIONAL, f"{m} imports an optional dependency at its top"
        for t, fn, line in inner:
            root = t.split('.')[0]
            if root in OPTIONAL: helpers[(m, 'dask' if root == 'distributed' else root)].add(fn)
            elif not _own(t) and root not in LAZY_OK: late.append(f"noisekd/{m}.py:{line}: {t} inside {fn}()")
        for fn in (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):   # importlib.import_module('dask')
            for call in (c for c in ast.walk(fn) if isinstance(c, ast.Call) and getattr(c.func, 'attr', getattr(c.func, 'id', None)) == 'import_module'):
                if call.args and isinstance(call.args[0], ast.Constant) and str(call.args[0].value).split('.')[0] in OPTIONAL:
                    helpers[(m, str(call.args[0].value).split('.')[0])].add(fn.name)
    assert not late, "required dependencies imported inside functions:\n" + '\n'.join(late)
    many = {k: sorted(v) for k, v in helpers.items() if len(v) > 1}
    assert not many, f"an optional dependency imported by more than one function of a module (give it one helper): {many}"

def test_the_cluster_names_the_extra_it_needs():
    "The cluster's one helper for Dask says which extra brings what is missing."
    tree = modules()['cluster']
    need = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == '_need')
    assert 'pip install "noisekd[' in ast.unparse(need)
    uses = [c for c in ast.walk(tree) if isinstance(c, ast.Call) and getattr(c.func, 'id', None) == '_need']
    assert len(uses) >= 8 and not [i for i in imports(tree)[1] if i[0].split('.')[0] in OPTIONAL]   # every Dask import goes through it

def test_the_light_floors_import_no_torch():
    "What the command line's help and `data check` load imports neither torch nor fastai at its top, however deep."
    mods, g = modules(), graph()
    g['cli'] = {_own(t) for t, _, _ in imports(mods['cli'])[0] if _own(t)} - {'cli'}   # not the modules it imports when a command runs
    seen, todo = set(), list(LIGHT)
    while todo:
        m = todo.pop()
        if m in seen: continue
        seen.add(m); todo += g[m]
    heavy = {m: sorted({t.split('.')[0] for t, _, _ in imports(mods[m])[0]} & HEAVY) for m in seen}
    assert not any(heavy.values()), f"the light modules load {({m: h for m, h in heavy.items() if h})}"

def loaded(argv, cwd) -> tuple:
    "(exit status, output, the modules imported up to the exit) of `noisekd argv` as the console script runs it, in a fresh interpreter."
    r = subprocess.run([sys.executable, '-X', 'importtime', '-c', 'import sys; from noisekd.cli import main; sys.exit(main())', *argv],
                       capture_output=True, text=True, cwd=cwd, timeout=120)
    mods = {l.split('|')[-1].strip() for l in r.stderr.splitlines() if l.startswith('import time:')}
    return r.returncode, r.stdout, mods

@pytest.mark.parametrize('argv', [['--help'], ['reproduce', '--help'], ['data', 'check'], ['demo', '--help'], ['run', '--help'],
                                  ['report', '--help'], ['data', '--help'], ['data', 'get', '--help'], ['bench', '--help'],
                                  ['check', '--help']])
def test_the_command_line_starts_without_torch(argv, tmp_path):
    "In a fresh interpreter, the help of `noisekd` and of each sub-command, and `noisekd data check`, import neither torch nor fastai."
    code, out, mods = loaded(argv, tmp_path)
    assert code == (1 if argv == ['data', 'check'] else 0), out           # data check: 1, nothing is usable in an empty folder
    assert 'noisekd.download' in mods and not mods & {'torch', 'fastai'}, f"noisekd {' '.join(argv)} imported {sorted(mods & {'torch', 'fastai'})}"
    if argv == ['data', 'check']: assert 'cifar10' in out and 'noisekd data get' in out   # it did check
    else: assert 'usage: noisekd' in out

def test_a_command_imports_its_module(tmp_path):
    "The check that torch is not loaded sees it where a command does load it."
    code, out, mods = loaded(['reproduce', 'table1', '--dry-run', '--scale', 'tiny'], tmp_path)
    assert code == 0 and 'table1 on digits' in out and {'torch', 'fastai', 'noisekd.experiments'} <= mods   # (-X importtime does not list what importlib.import_module imports itself)
