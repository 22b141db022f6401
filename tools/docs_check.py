#!/usr/bin/env python3
"""Offline check of noisekd's docs site, for machines without Quarto.

The site is the notebooks in `nbs/` processed by nbdev and rendered by Quarto (`nbdev-docs`). Quarto
cannot be installed here, so this script does the same work with what can be:

1. **execute** every notebook as `nbdev-test` does (nbdev's `test_nb`, `IN_TEST=1` so examples shrink to
   seconds, `notest`/`slow` cells skipped) and keep its outputs in `_docs_check/nbs/` (progress bars
   dropped, long logs cut; figures and small outputs kept);
2. **process** those notebooks with nbdev's docs processing (`nbdev.quarto.proc_nbs`, what the
   `nbdev-proc-nbs` command runs after it has made sure Quarto is installed): frontmatter, directives,
   `show_doc` entries for every exported name (executed, so they carry signatures and docstrings),
   hidden and exported cells removed; written to `_proc/`;
3. **render** every processed notebook to HTML with nbconvert, markdown through pandoc (as Quarto does)
   and formulas through MathJax (Debian's `libjs-mathjax`, else pandoc's MathML): an approximation of
   the Quarto pages, not their theme, in `_docs_check/html/` with the site's page names and sidebar;
4. load every page in headless Chromium: the check fails on a formula MathJax cannot typeset, and
   screenshots of the index and callbacks pages (full page, cut into tiles) go to
   `_docs_check/screenshots/` for a person to look at.

It fails (exit status 1) on any notebook that does not run, process or render, and on a site
configuration that does not match the notebooks (sidebar, math, the index's two commands). It needs
`pip install nbconvert` and `apt-get install -y pandoc chromium libjs-mathjax` (exit status 2 names what
is missing). Every notebook: about 11 minutes on two busy cores (8 minutes of CPU); the index and
callbacks pages alone: about 2 minutes.

The site shows every example at the size its text states (`--full`: `IN_TEST` unset, as a reader runs
it); without `--full` the examples shrink to seconds as under `nbdev-test`, for a quick check of the
pages. Every executed notebook is stamped with the size it ran at (`metadata.noisekd_docs`), and
`--check-site` fails on a page built at test size, so that such a page is never published.

    python tools/docs_check.py                      # every notebook, at test size (a quick check)
    python tools/docs_check.py index 04_callbacks   # some notebooks (stems of nbs/*.ipynb)
    python tools/docs_check.py --full               # every notebook as the site shows it (see the README for its time)
    python tools/docs_check.py --execute-only --full   # the deploy workflow: step 1 at full size into _docs_check/nbs,
    python tools/docs_check.py --check-site            #   refuse a page built at test size,
    nbdev-docs --path _docs_check/nbs                  #   build the site with Quarto
    python tools/docs_check.py --reuse --screenshots all   # steps 2-4 on what was run, a screenshot of every page
"""
from __future__ import annotations
import argparse, json, os, re, shutil, subprocess, sys, tempfile, time, html as _html
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT/'nbs'
SITE_FILES = ['_quarto.yml', 'nbdev.yml', 'sidebar.yml', 'styles.css']
SCREENSHOT_PAGES = ['index', '04_callbacks']
MATHJAX = Path('/usr/share/javascript/mathjax')
SITE_URL = 'https://noisekd.github.io/noisekd/'
CHROMIUM_FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-quic',
                  '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync',
                  '--hide-scrollbars', '--allow-file-access-from-files', '--force-device-scale-factor=1']
WIDTH, TILE = 1280, 1600

def log(*a): print(*a, flush=True)

# ---------------------------------------------------------------- configuration (no tools needed)

def chapters() -> list[str]:
    "Stems of the notebooks that are pages of the site (top level of nbs/, as `recursive = false`)."
    return sorted(p.stem for p in NBS.glob('*.ipynb') if not p.name.startswith(('_', '.')))

def _yaml(path): 
    import yaml
    return yaml.safe_load(Path(path).read_text())

def sidebar_entries(sidebar=None):
    "Every entry of sidebar.yml that is not a section (a notebook's path, or a link's dict), in order."
    def walk(items):
        for it in items:
            if isinstance(it, dict) and 'contents' in it: yield from walk(it['contents'])
            else: yield it
    yield from walk((sidebar or _yaml(NBS/'sidebar.yml'))['website']['sidebar']['contents'])

def sidebar_pages(sidebar=None) -> list[str]:
    "The notebook pages listed in sidebar.yml, in order (external links left out)."
    out = [it if isinstance(it, str) else it['href'] for it in sidebar_entries(sidebar)
           if isinstance(it, str) or (isinstance(it, dict) and 'href' in it and not re.match(r'https?://', it['href']))]
    return [re.sub(r'\.ipynb$', '', p) for p in out]

def named_by_file(sidebar=None) -> list[str]:
    "Sidebar links whose text is a file name (a reader sees `teacher.ipynb`, not what the page is)."
    return [it['text'] for it in sidebar_entries(sidebar)
            if isinstance(it, dict) and re.fullmatch(r'[\w./-]+\.(ipynb|qmd|md|html)', str(it.get('text', '')))]

def readme_block(name:str, text:str=None) -> str:
    text = text if text is not None else (ROOT/'README.md').read_text()
    m = re.search(rf'<!-- {name} -->\s*```\n(.*?)\n```\s*<!-- /{name} -->', text, re.S)
    return m.group(1).strip() if m else None

def config_problems() -> tuple[list[str], list[str]]:
    "Problems (fail the check) and warnings in the site's configuration, found without any tool."
    probs, warns = [], []
    for f in SITE_FILES:
        if not (NBS/f).is_file(): probs.append(f"nbs/{f} is missing.")
    if probs: return probs, warns
    q = _yaml(NBS/'_quarto.yml')
    html_fmt = (q.get('format') or {}).get('html') or {}
    if html_fmt.get('html-math-method') not in ('mathjax', 'katex'):
        probs.append("nbs/_quarto.yml: format.html.html-math-method should be mathjax (or katex) so formulas render.")
    if not {'nbdev.yml', 'sidebar.yml'} <= set(q.get('metadata-files') or []):
        probs.append("nbs/_quarto.yml: metadata-files must list nbdev.yml and sidebar.yml.")
    pages, nbs = sidebar_pages(), chapters()
    if missing := [n for n in nbs if n not in pages]:
        probs.append(f"nbs/sidebar.yml does not list {', '.join(m + '.ipynb' for m in missing)}: add each chapter where it belongs in the story.")
    if extra := [p for p in pages if p not in nbs]:
        probs.append(f"nbs/sidebar.yml lists {', '.join(extra)}, which is not a notebook of nbs/.")
    if len(set(pages)) != len(pages): probs.append("nbs/sidebar.yml lists a page twice.")
    if files := named_by_file():
        probs.append(f"nbs/sidebar.yml names {', '.join(files)} by file: give each link the title of what it opens.")
    if pages[:1] != ['index']: probs.append("nbs/sidebar.yml should start with index.ipynb.")
    story = ['01_data', '02_models', '03_losses', '04_callbacks', '05_attacks', '06_robustness', '06a_evaluate',
             '07_train', '08_experiments', '09_report', '10_cli']
    pos = [pages.index(s) for s in story if s in pages]
    if pos != sorted(pos): probs.append("nbs/sidebar.yml: chapters are out of the story's order (data → models → losses → "
                                        "callbacks → attacks → robustness → training → experiments).")
    idx = NBS/'index.ipynb'
    if not idx.is_file(): probs.append("nbs/index.ipynb (the home page) is missing.")
    else:
        src = '\n'.join(''.join(c['source']) for c in json.loads(idx.read_text())['cells'])
        if unmapped := [n for n in nbs if n != 'index' and f'({n}.ipynb)' not in src]:
            probs.append(f"nbs/index.ipynb's map of the chapters does not link {', '.join(u + '.ipynb' for u in unmapped)}.")
        for name in ('main-command', 'test-command'):
            cmd = readme_block(name)
            if cmd is None: probs.append(f"README.md has no {name} block.")
            elif f"```\n{cmd}\n```" not in src: probs.append(f"nbs/index.ipynb does not show README's {name} exactly: {cmd}")
    try:
        from nbdev.config import get_config
        if not get_config(ROOT).get('custom_sidebar', False):
            warns.append("pyproject.toml [tool.nbdev] has no `custom_sidebar = true`: nbdev-docs will replace "
                         "nbs/sidebar.yml by a flat list of the notebooks (same order, no sections).")
    except Exception as e: warns.append(f"could not read nbdev's configuration: {e}")
    return probs, warns

def notebook_problems(names=None) -> tuple[list[str], list[str]]:
    "Problems and warnings in the notebooks' sources that spoil their pages, found without any tool."
    import ast
    probs, warns = [], []
    for n in names or chapters():
        nb = json.loads((NBS/f'{n}.ipynb').read_text())
        has_exports = any(re.search(r'^#\|\s*export', ''.join(c['source']), re.M) for c in nb['cells'] if c['cell_type'] == 'code')
        commented, mixed = [], []
        for c in nb['cells']:
            s = ''.join(c['source']); cid = c.get('id', '?')
            if c['cell_type'] == 'markdown':
                lines = [l for l in s.split('\n') if l.strip()]
                if len(lines) >= 2 and all(l.startswith('# ') or l.strip() == '#' for l in lines): commented.append(cid)
            elif c['cell_type'] == 'code' and has_exports and not re.search(r'^#\|\s*(export|exporti|exports|hide)\b', s, re.M):
                try: body = ast.parse(s).body
                except SyntaxError: continue
                imp = [isinstance(b, (ast.Import, ast.ImportFrom)) for b in body]
                if any(imp) and not all(imp): mixed.append(cid)
        if commented:
            probs.append(f"{n}.ipynb: {len(commented)} markdown cell(s) ({', '.join(commented)}) have '# ' before every "
                         f"line (written as Python comments), so each line renders as a heading: remove the prefixes.")
        if mixed:       # seen: 12 such cells made nbdev-docs fail on 4 chapters at full size
            probs.append(f"{n}.ipynb: cell(s) {', '.join(mixed)} mix imports with other code. nbdev's docs processing runs "
                         f"every cell that imports (so that show_doc works), so these run whole when the site is built "
                         f"and fail if they use names from cells it skips: put the imports in a cell of their own.")
    return probs, warns

# ---------------------------------------------------------------- tools

def find_chromium():
    for n in ('chromium', 'chromium-browser', 'google-chrome', 'chrome'):
        if p := shutil.which(n): return p

def missing_tools(render=True) -> list[str]:
    miss = []
    for mod, pkg in [('nbdev', 'nbdev'), ('execnb', 'execnb'), ('yaml', 'pyyaml')] + ([('nbconvert', 'nbconvert')] if render else []):
        try: __import__(mod)
        except ImportError: miss.append(f"the Python package {pkg} (pip install {pkg})")
    if render:
        if not shutil.which('pandoc'): miss.append("pandoc (apt-get install -y pandoc)")
        if not find_chromium(): miss.append("chromium (apt-get install -y chromium)")
    return miss

# ---------------------------------------------------------------- 1. execute

_EXEC = r'''
import sys, os, warnings
warnings.filterwarnings('ignore')
import nbdev.test
from nbdev.test import test_nb
if os.environ.get('NOISEKD_DOCS_FULL'): nbdev.test.in_notebook = lambda: True   # keep IN_TEST unset: examples at full size
from nbdev.config import get_config
flags = get_config().get('tst_flags', '').split()
size = 'test' if os.environ.get('IN_TEST') or not nbdev.test.in_notebook() else 'full'   # what test_nb gives the examples
ok, t = test_nb(sys.argv[1], skip_flags=flags, save=True, cell_timeout=int(sys.argv[2]))
print('\n' + _SIZE_MARK + size)
sys.exit(0 if ok else 1)
'''
_SIZE_MARK = 'noisekd-docs-size='
_EXEC = _EXEC.replace('_SIZE_MARK', repr(_SIZE_MARK))

def stamp(nb:dict, size:str, seconds:float) -> dict:
    "Record in the notebook's metadata at which size its examples ran ('full': as readers run them, 'test': IN_TEST set)."
    nb.setdefault('metadata', {})['noisekd_docs'] = dict(size=size, seconds=round(seconds, 1))
    return nb

def built_size(path) -> str | None:
    "The size an executed notebook's examples ran at ('full' or 'test'), None if it carries no stamp."
    try: return json.loads(Path(path).read_text()).get('metadata', {}).get('noisekd_docs', {}).get('size')
    except (OSError, ValueError): return None

def site_problems(nbs_dir, names=None) -> list[str]:
    "Pages meant for the site (every chapter) that are missing from `nbs_dir` or were not built at full size."
    probs = []
    for n in names or chapters():
        f = Path(nbs_dir)/f'{n}.ipynb'
        size = built_size(f) if f.exists() else 'missing'
        if size == 'missing': probs.append(f"{n}.ipynb is not in {nbs_dir}: run python tools/docs_check.py --execute-only --full")
        elif size != 'full':
            probs.append(f"{n}.ipynb was built " + ("at test size (IN_TEST set: examples shrunk to seconds)" if size == 'test' else
                         "without a size stamp (not by tools/docs_check.py)") +
                         ": the site shows examples as readers run them; build it with python tools/docs_check.py --execute-only --full")
    return probs

def _is_progress(out) -> bool:
    d = out.get('data', {})
    h = ''.join(d.get('text/html', ''))
    return '<progress' in h or 'progress-bar' in h or ('text/html' in d and not h.strip())

def trim_outputs(nb:dict, max_lines:int=40, max_bytes:int=200_000) -> dict:
    "Keep outputs where they are small: drop progress bars, cut long logs, drop huge non-image outputs."
    for c in nb['cells']:
        c.get('metadata', {}).pop('execution', None)                    # execnb's timings, not valid nbformat
        if c['cell_type'] != 'code': continue
        outs = []
        for o in c.get('outputs', []):
            if o.get('output_type') == 'display_data' and _is_progress(o): continue
            if o.get('output_type') == 'stream':
                lines = ''.join(o['text']).replace('\r\n', '\n').split('\n')
                lines = [l.split('\r')[-1] for l in lines]               # a carriage return redraws the line
                if len(lines) > max_lines:
                    cut = len(lines) - max_lines
                    lines = lines[:max_lines - 10] + [f'… ({cut} lines cut in the docs)'] + lines[-10:]
                o['text'] = '\n'.join(lines)
            d = o.get('data', {})
            if d and not any(k.startswith('image/') for k in d) and len(json.dumps(d)) > max_bytes:
                o = dict(output_type='stream', name='stdout', text='(a large output, left out of the docs)\n')
            outs.append(o)
        c['outputs'] = outs
    return nb

def execute(names, out_nbs:Path, jobs:int=2, timeout:int=600, full:bool=False) -> dict:
    "Run each notebook as nbdev-test does, outputs kept, into `out_nbs`; {name: (ok, seconds, error)}."
    out_nbs.mkdir(parents=True, exist_ok=True)
    for f in NBS.iterdir():     # the site's configuration and the data files chapters read (refused_cli.csv, ...)
        if f.is_file() and f.suffix != '.ipynb' and not f.name.startswith('.'): shutil.copy2(f, out_nbs/f.name)
    def one(name):
        dst = out_nbs/f'{name}.ipynb'
        shutil.copy2(NBS/f'{name}.ipynb', dst)
        t0 = time.time()
        env = dict(os.environ, IN_TEST='1', PYTHONWARNINGS='ignore', MPLBACKEND='Agg')
        env.setdefault('OMP_NUM_THREADS', str(max(1, (os.cpu_count() or 1) // max(1, jobs))))   # `jobs` notebooks share the cores: no oversubscription
        if full: env.pop('IN_TEST'); env['NOISEKD_DOCS_FULL'] = '1'
        r = subprocess.run([sys.executable, '-c', _EXEC, str(dst), str(timeout)], cwd=out_nbs, env=env,
                           capture_output=True, text=True)
        dt = time.time() - t0
        if r.returncode != 0: return name, (False, dt, (r.stderr or r.stdout)[-3000:])
        size = re.findall(re.escape(_SIZE_MARK) + r'(\w+)', r.stdout)
        nb = stamp(trim_outputs(json.loads(dst.read_text())), size[-1] if size else None, dt)
        dst.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + '\n')
        return name, (True, dt, '')
    res = {}
    with ThreadPoolExecutor(max(1, jobs)) as ex:
        for name, r in ex.map(one, names):
            res[name] = r
            log(f"  {'ran   ' if r[0] else 'FAILED'} {name}.ipynb  {r[1]:5.1f} s")
    return res

# ---------------------------------------------------------------- 2. process (nbdev)

_PROC = r'''
import sys, warnings
warnings.filterwarnings('ignore')
from nbdev.quarto import proc_nbs
proc_nbs(sys.argv[1], file_re=sys.argv[2])
'''

_PROC1 = r'''
import sys, warnings
warnings.filterwarnings('ignore')
from pathlib import Path
from nbdev.serve_drv import main
from nbdev.processors import FilterDefaults
main((Path(sys.argv[1]), Path(sys.argv[2]), FilterDefaults))    # what proc_nbs does for one notebook
'''

def process(names, out_nbs:Path) -> dict:
    "nbdev's docs processing of the executed notebooks into `_proc/`; {name: (ok, error)}."
    proc = ROOT/'_proc'
    env = dict(os.environ, PYTHONWARNINGS='ignore')
    for n in names: (proc/f'{n}.ipynb').unlink(missing_ok=True)
    file_re = '^(' + '|'.join(re.escape(n) for n in names) + r')\.ipynb$'
    r = subprocess.run([sys.executable, '-c', _PROC, str(out_nbs), file_re], cwd=ROOT, env=env, capture_output=True, text=True)
    res = {}
    for n in names:
        if (proc/f'{n}.ipynb').exists(): res[n] = (True, ''); continue
        # proc_nbs stops at the first notebook that fails: process the others one by one, to learn why
        r1 = subprocess.run([sys.executable, '-c', _PROC1, str(out_nbs/f'{n}.ipynb'), str(proc/f'{n}.ipynb')],
                            cwd=out_nbs, env=env, capture_output=True, text=True)
        ok = r1.returncode == 0 and (proc/f'{n}.ipynb').exists()
        res[n] = (ok, '' if ok else _last_exception(r1.stderr or r.stderr))
    for n, (ok, err) in res.items(): log(f"  {'processed' if ok else 'FAILED   '} {n}.ipynb" + (f"\n{err}" if err else ''))
    return res

def _last_exception(tb:str) -> str:
    "The part of a traceback that says what went wrong in the notebook (nbdev names the cell)."
    i = tb.rfind('Exception: Error')
    return (tb[i:] if i >= 0 else tb)[-2500:]

# ---------------------------------------------------------------- 3. render (nbconvert + pandoc)

_pandoc_cache = {}
def md2html(source:str, math:str='mathjax') -> str:
    "Markdown as Quarto reads it (pandoc's markdown: fenced divs, attributes, math) to HTML."
    if isinstance(source, list): source = ''.join(source)
    key = (source, math)
    if key not in _pandoc_cache:
        r = subprocess.run(['pandoc', '-f', 'markdown', '-t', 'html', f'--{math}'], input=source, capture_output=True, text=True)
        if r.returncode != 0: raise RuntimeError(f"pandoc could not read this markdown ({r.stderr.strip()}):\n{source[:500]}")
        _pandoc_cache[key] = r.stdout
    return _pandoc_cache[key]

_DIRECTIVE = re.compile(r'^\s*#\|\s*([\w-]+)\s*:\s*(.*?)\s*$')

def page_names(proc:Path) -> dict:
    "{notebook stem: html file name} from each processed notebook's `output-file` (as Quarto names pages)."
    out = {}
    for p in proc.glob('*.ipynb'):
        fm = frontmatter(json.loads(p.read_text()))
        out[p.stem] = fm.get('output-file', p.stem + '.html')
    return out

def frontmatter(nb:dict) -> dict:
    for c in nb['cells'][:2]:
        s = ''.join(c['source'])
        if c['cell_type'] == 'raw' and s.lstrip().startswith('---'):
            import yaml
            return yaml.safe_load(s.strip().strip('-')) or {}
    return {}

def _prepare(nb:dict) -> tuple[dict, dict]:
    "Apply what Quarto does with the frontmatter and the cell directives left by nbdev."
    import nbformat
    fm, cells = frontmatter(nb), []
    head = f"# {fm['title']}" if fm.get('title') else ''
    if fm.get('description'): head += f"\n\n::: {{.description}}\n{fm['description']}\n:::"
    if head: cells.append(nbformat.v4.new_markdown_cell(head))
    for c in nb['cells']:
        s = ''.join(c['source'])
        if c['cell_type'] == 'raw' and s.lstrip().startswith('---'): continue
        for k in set(c) - {'cell_type', 'id', 'metadata', 'source', 'outputs', 'execution_count', 'attachments'}: del c[k]
        c.get('metadata', {}).pop('execution', None)                    # nbdev's and execnb's bookkeeping
        if c['cell_type'] == 'code':
            lines, dirs = s.split('\n'), {}
            while lines and (m := _DIRECTIVE.match(lines[0])): dirs[m.group(1)] = m.group(2).lower(); lines.pop(0)
            if dirs.get('include') == 'false': continue
            c['source'] = '\n'.join(lines)
            if dirs.get('output') == 'false': c['outputs'] = []
            if dirs.get('echo') == 'false': c.setdefault('metadata', {}).setdefault('tags', []).append('remove_input')
            if not c['source'].strip() and not c.get('outputs'): continue
        cells.append(c)
    nb['cells'] = cells
    return nbformat.from_dict(nb), fm

def _sidebar_html(names:dict, titles:dict, current:str) -> str:
    "The site's sidebar (sidebar.yml), with each page's title, as Quarto shows it."
    sb = _yaml(NBS/'sidebar.yml')
    def item(it):
        if isinstance(it, str):
            stem = re.sub(r'\.ipynb$', '', it)
            cls = ' class="current"' if stem == current else ''
            return f'<li{cls}><a href="{names.get(stem, stem + ".html")}">{_html.escape(titles.get(stem, stem))}</a></li>'
        if 'contents' in it:
            return (f'<li class="section"><span>{_html.escape(it.get("section", ""))}</span><ul>'
                    + ''.join(item(i) for i in it['contents']) + '</ul></li>')
        return f'<li><a href="{_html.escape(it["href"])}">{_html.escape(it.get("text", it["href"]))}</a></li>'
    return '<ul>' + ''.join(item(i) for i in sb['website']['sidebar']['contents']) + '</ul>'

_CSS = '''
<style>
body { margin: 0; }
#dc-sidebar { position: fixed; top: 0; left: 0; bottom: 0; width: 240px; overflow-y: auto; padding: 12px 10px;
  background: #f7f7f9; border-right: 1px solid #ddd; font: 14px/1.45 system-ui, sans-serif; }
#dc-sidebar .site { font-weight: 600; font-size: 17px; margin-bottom: 4px; }
#dc-sidebar .note { font-size: 11px; color: #888; margin-bottom: 10px; }
#dc-sidebar ul { list-style: none; padding-left: 0; margin: 0; } #dc-sidebar ul ul { padding-left: 10px; }
#dc-sidebar li.section > span { display: block; margin-top: 8px; color: #555; font-weight: 600; }
#dc-sidebar li.current > a { font-weight: 700; } #dc-sidebar a { color: #2c6bbf; text-decoration: none; }
main, body > .jp-Notebook { margin-left: 260px !important; max-width: 1000px; }
.description { font-style: italic; font-size: 125%; opacity: .7; }
.jp-RenderedMarkdown h3 { border-top: 1px solid #eee; padding-top: 6px; }
</style>
'''

_PROBE = '''
<script>
function dcDone() {
  var err = document.querySelectorAll('.MathJax_Error, merror, .mjx-merror').length;
  var n = document.querySelectorAll('.MathJax, .MathJax_Display, .MathJax_CHTML, math').length;
  var h = Math.max(document.body.scrollHeight, document.documentElement.scrollHeight);
  var d = document.createElement('div'); d.id = 'dc-probe';
  d.setAttribute('data-height', h); d.setAttribute('data-math', n); d.setAttribute('data-math-errors', err);
  d.setAttribute('data-bad-tex', Array.from(document.querySelectorAll('.MathJax_Error, merror, .mjx-merror')).map(e => e.textContent).join(' | '));
  document.body.appendChild(d);
}
window.addEventListener('load', function () {
  if (window.MathJax && MathJax.Hub) MathJax.Hub.Queue(dcDone); else setTimeout(dcDone, 500);
});
</script>
'''

def render(names, proc:Path, html_dir:Path, out_nbs:Path=None) -> dict:
    "Render each processed notebook to `html_dir/<page>.html`; {name: (ok, error, stats)}."
    import nbformat
    from nbconvert import HTMLExporter
    html_dir.mkdir(parents=True, exist_ok=True)
    mathjax = MATHJAX.joinpath('MathJax.js').exists()
    if mathjax and not (html_dir/'mathjax').exists(): (html_dir/'mathjax').symlink_to(MATHJAX)
    math = 'mathjax' if mathjax else 'mathml'
    pages = page_names(proc)
    titles = {n: frontmatter(json.loads((proc/f'{n}.ipynb').read_text())).get('title', n) for n in pages}
    ex = HTMLExporter(config=_nbconvert_config(), template_name='lab', exclude_input_prompt=True, exclude_output_prompt=True,
                      mathjax_url='mathjax/MathJax.js?config=TeX-AMS_CHTML-full' if mathjax else '',
                      filters={'markdown2html': lambda s, *a, **k: md2html(s, math)})
    res = {}
    for n in names:
        f = proc/f'{n}.ipynb'
        try:
            nb, fm = _prepare(json.loads(json.dumps(nbformat.reads(f.read_text(), as_version=4))))
            body, _ = ex.from_notebook_node(nb)
            body = _fix_links(body, pages)
            size = built_size(out_nbs/f'{n}.ipynb') if out_nbs else None
            note = '' if size == 'full' else ' <b>Built at test size (IN_TEST): not what the site shows.</b>'
            nav = (f'<nav id="dc-sidebar"><div class="site"><a href="index.html">noisekd</a></div>'
                   f'<div class="note">offline check: nbconvert + pandoc, not the Quarto theme.{note}</div>'
                   f'{_sidebar_html(pages, titles, n)}</nav>')
            body = body.replace('</head>', _CSS + _PROBE + '</head>', 1)
            body = re.sub(r'(<body[^>]*>)', lambda m: m.group(1) + nav, body, count=1)
            (html_dir/pages[n]).write_text(body)
            res[n] = (True, '', page_stats(nb, fm))
        except Exception as e:
            res[n] = (False, f"{type(e).__name__}: {e}", {})
        log(f"  {'rendered' if res[n][0] else 'FAILED  '} {n}.ipynb -> {pages.get(n)}" + ('' if res[n][0] else f"\n{res[n][1]}"))
    return res

def _nbconvert_config():
    from traitlets.config import Config
    c = Config()
    c.TagRemovePreprocessor.remove_input_tags = {'remove_input'}
    c.TagRemovePreprocessor.enabled = True
    return c

def _fix_links(body:str, pages:dict) -> str:
    "Links to the site and to notebooks point at the rendered pages, as on the Quarto site."
    body = body.replace(f'href="{SITE_URL}', 'href="')
    def nb_link(m):
        stem = m.group(2)
        return f'href="{pages.get(stem, stem + ".html")}{m.group(3) or ""}"' if stem in pages else m.group(0)
    return re.sub(r'href="(\./)?([\w.-]+)\.ipynb(#[^"]*)?"', nb_link, body)

def page_stats(nb, fm) -> dict:
    "What a chapter shows: formulas, documented names, figures, code cells, prose."
    md = '\n'.join(c.source for c in nb.cells if c.cell_type == 'markdown')
    outs = [o for c in nb.cells if c.cell_type == 'code' for o in c.get('outputs', [])]
    return dict(formulas=len(re.findall(r'\$\$.+?\$\$|\$[^$\n]+\$', md, re.S)),
                show_doc=sum('### ' in ''.join(o.get('data', {}).get('text/markdown', '')) for o in outs),
                figures=sum(any(k.startswith('image/') for k in o.get('data', {})) for o in outs),
                code=sum(c.cell_type == 'code' and 'remove_input' not in c.metadata.get('tags', []) for c in nb.cells),
                words=len(re.findall(r'\w+', re.sub(r'\$.*?\$', '', md, flags=re.S))), title=fm.get('title', ''))

# ---------------------------------------------------------------- 4. browser

def chromium(args, timeout=120) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as prof:
        return subprocess.run([find_chromium(), *CHROMIUM_FLAGS, f'--user-data-dir={prof}', *args],
                              capture_output=True, text=True, timeout=timeout)

def probe(page:Path) -> dict:
    "Load `page` in headless Chromium, let MathJax typeset; height, formulas and TeX errors."
    r = chromium(['--virtual-time-budget=30000', f'--window-size={WIDTH},1000', '--dump-dom', page.as_uri()])
    m = re.search(r'<div id="dc-probe"([^>]*)>', r.stdout)
    if not m: return dict(ok=False, error=f"the page did not finish loading in Chromium: {r.stderr[-500:]}")
    attrs = dict(re.findall(r'data-([\w-]+)="([^"]*)"', m.group(1)))
    return dict(ok=True, height=int(attrs['height']), math=int(attrs['math']), math_errors=int(attrs['math-errors']),
                bad_tex=_html.unescape(attrs.get('bad-tex', '')))

def screenshot(page:Path, out:Path, height:int) -> list[Path]:
    "A full-page PNG of `page` and the same cut into tiles a person (or an image viewer) can read."
    from PIL import Image, ImageChops
    out.parent.mkdir(parents=True, exist_ok=True)
    height = min(max(height, 600), 30000)
    r = chromium(['--virtual-time-budget=30000', f'--window-size={WIDTH},{height}', f'--screenshot={out}', page.as_uri()], timeout=300)
    if not out.exists(): raise RuntimeError(f"Chromium wrote no screenshot: {r.stderr[-500:]}")
    im = Image.open(out).convert('RGB')
    bbox = ImageChops.difference(im, Image.new('RGB', im.size, (255, 255, 255))).getbbox()
    if bbox: im = im.crop((0, 0, im.width, min(im.height, bbox[3] + 20)))
    im.save(out)
    tiles = []
    for i, top in enumerate(range(0, im.height, TILE)):
        t = out.with_name(f'{out.stem}-{i+1}.png'); im.crop((0, top, im.width, min(im.height, top + TILE))).save(t); tiles.append(t)
    return [out] + tiles

# ---------------------------------------------------------------- main

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split('\n', 1)[1])
    ap.add_argument('names', nargs='*', help='notebooks to check (stems of nbs/*.ipynb); default: all')
    ap.add_argument('--out', default=str(ROOT/'_docs_check'), help='scratch folder (default: _docs_check, ignored by git)')
    ap.add_argument('--jobs', type=int, default=2, help='notebooks run at once (default: 2)')
    ap.add_argument('--execute-only', action='store_true', help='only run the notebooks into OUT/nbs (for nbdev-docs)')
    ap.add_argument('--full', action='store_true', help="run the examples at the size readers get (IN_TEST unset): slow, for publishing")
    ap.add_argument('--check-site', metavar='DIR', help="only check that every chapter in DIR (default: OUT/nbs) was built at full "
                    "size, as the site must be; exit status 1 if one was built at test size (what the deploy workflow runs before nbdev-docs)",
                    nargs='?', const='')
    ap.add_argument('--reuse', action='store_true', help="skip step 1: process and render the notebooks already run into OUT/nbs "
                    "(e.g. by --execute-only --full)")
    ap.add_argument('--timeout', type=int, default=600, help='seconds a cell may run (default: 600)')
    ap.add_argument('--no-screenshots', action='store_true', help='skip the screenshots (the browser check still runs)')
    ap.add_argument('--screenshots', nargs='+', default=SCREENSHOT_PAGES, metavar='PAGE',
                    help=f"notebooks whose pages are photographed (default: {' '.join(SCREENSHOT_PAGES)}; all: every page checked)")
    a = ap.parse_args(argv)
    t0 = time.time()
    out = Path(a.out).resolve(); out.mkdir(parents=True, exist_ok=True)
    (out/'.gitignore').write_text('*\n')
    all_nbs = chapters()
    if a.check_site is not None:
        d = Path(a.check_site or out/'nbs').resolve()
        probs = site_problems(d)
        log(f"Site pages in {d}: " + ('every chapter built at full size' if not probs else f"{len(probs)} not fit to publish"))
        for p in probs: log(f"  PROBLEM {p}")
        return _finish(probs, t0)
    names = [re.sub(r'\.ipynb$', '', Path(n).name) for n in a.names] or all_nbs
    if bad := [n for n in names if n not in all_nbs]:
        log(f"No notebook nbs/{bad[0]}.ipynb. Notebooks: {', '.join(all_nbs)}"); return 2
    if miss := missing_tools(render=not a.execute_only):
        log("The docs check needs " + '; '.join(miss) + '.'); return 2
    failures = []
    probs, warns = config_problems()
    log("Site configuration:" + (' ok' if not probs else ''))
    for p in probs: log(f"  PROBLEM {p}")
    for w in warns: log(f"  warning {w}")
    failures += [f"configuration: {p}" for p in probs]
    nprobs, nwarns = notebook_problems(names)
    log("Notebook sources:" + (' ok' if not nprobs else ''))
    for p in nprobs: log(f"  PROBLEM {p}")
    for w in nwarns: log(f"  warning {w}")
    failures += nprobs

    if a.reuse:
        ex = {n: ((out/'nbs'/f'{n}.ipynb').exists(), 0., f"not run yet into {out/'nbs'}") for n in names}
        log(f"1. Reusing the notebooks run into {out/'nbs'}: " + ', '.join(f"{n} ({built_size(out/'nbs'/f'{n}.ipynb')})" for n in names))
    else:
        log(f"1. Running {len(names)} notebook(s) as nbdev-test does, outputs kept ({'full size' if a.full else 'IN_TEST=1'}) …")
        ex = execute(names, out/'nbs', a.jobs, a.timeout, a.full)
    failures += [f"{n}.ipynb does not run:\n{e}" for n, (ok, _, e) in ex.items() if not ok]
    if a.full: failures += site_problems(out/'nbs', [n for n in names if ex[n][0]])
    log(f"   {sum(t for _, t, _ in ex.values()):.0f} s of notebook time ({a.jobs} at once)")
    if a.execute_only:
        return _finish(failures, t0)
    ran = [n for n in names if ex[n][0]]

    log("2. nbdev's docs processing (nbdev-proc-nbs) …")
    pr = process(ran, out/'nbs')
    failures += [f"{n}.ipynb does not process with nbdev:\n{e}" for n, (ok, e) in pr.items() if not ok]

    from nbdev.doclinks import nbpath2html
    html_dir = out/'html'
    shutil.rmtree(out/'screenshots', ignore_errors=True)                 # no stale page or screenshot survives
    for n in names: (html_dir/nbpath2html(Path(f'{n}.ipynb')).name).unlink(missing_ok=True)
    log("3. Rendering HTML (nbconvert, pandoc, " + ('MathJax' if (MATHJAX/'MathJax.js').exists() else 'MathML: apt-get install libjs-mathjax for MathJax') + ") …")
    rd = render([n for n in ran if pr[n][0]], ROOT/'_proc', html_dir, out/'nbs')
    failures += [f"{n}.ipynb does not render: {e}" for n, (ok, e, _) in rd.items() if not ok]

    log("4. Loading the pages in headless Chromium …")
    pages = page_names(ROOT/'_proc')
    shots = []
    for n, (ok, _, st) in rd.items():
        if not ok: continue
        p = probe(html_dir/pages[n]); st.update(math_rendered=p.get('math'), height=p.get('height'))
        if not p['ok']: failures.append(f"{pages[n]}: {p['error']}"); continue
        if p['math_errors']: failures.append(f"{pages[n]}: {p['math_errors']} formula(s) MathJax cannot typeset: {p['bad_tex'][:400]}")
        if (n in a.screenshots or 'all' in a.screenshots) and not a.no_screenshots:
            shots += screenshot(html_dir/pages[n], out/'screenshots'/f'{n}.png', p['height'])

    log("\nWhat each page shows (formulas in its prose, show_doc entries, figures, visible code cells, words of prose):")
    log(f"  {'notebook':<16}{'page':<18}{'formulas':>9}{'show_doc':>9}{'figures':>8}{'code':>6}{'words':>7}")
    for n, (ok, _, st) in rd.items():
        if ok: log(f"  {n:<16}{pages[n]:<18}{st['formulas']:>9}{st['show_doc']:>9}{st['figures']:>8}{st['code']:>6}{st['words']:>7}")
    log(f"\nPages: {html_dir}/index.html")
    if shots: log("Screenshots: " + ', '.join(str(s.relative_to(ROOT)) if s.is_relative_to(ROOT) else str(s) for s in shots))
    return _finish(failures, t0)

def _finish(failures, t0) -> int:
    dt = time.time() - t0
    if failures:
        log(f"\nDocs check FAILED ({len(failures)} problem(s), {dt:.0f} s):")
        for f in failures: log(f"- {f}")
        return 1
    log(f"\nDocs check passed ({dt:.0f} s).")
    return 0

if __name__ == '__main__': sys.exit(main())
