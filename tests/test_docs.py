"""The docs site: its configuration matches the notebooks and the README, and (where pandoc and Chromium are
installed) the index and callbacks pages run, process with nbdev, render and load in a real browser."""
import ast, json, re, shutil, subprocess, sys, importlib.util
import pytest
from conftest import ROOT

spec = importlib.util.spec_from_file_location('docs_check', ROOT/'tools'/'docs_check.py')
dc = importlib.util.module_from_spec(spec); spec.loader.exec_module(dc)

def test_site_configuration():
    "Math is on, every chapter is in the sidebar in the story's order, the index shows the README's commands."
    probs, _ = dc.config_problems()
    assert not probs, '\n'.join(probs)

def test_markdown_cells_are_prose():
    "No chapter's markdown is written as Python comments (each line would render as a heading), and no cell mixes imports with code (nbdev-docs runs it alone)."
    probs, _ = dc.notebook_problems()
    assert not probs, '\n'.join(probs)

def test_index_shows_the_readme_commands_exactly():
    src = '\n'.join(''.join(c['source']) for c in json.loads((ROOT/'nbs'/'index.ipynb').read_text())['cells'])
    for name in ('main-command', 'test-command'):
        cmd = dc.readme_block(name)
        assert cmd and f'```\n{cmd}\n```' in src, name

def test_index_has_a_ten_line_fickle_teacher_example():
    "The Fickle Teacher example is one short code cell that trains in a fastai Learner, shrinking under nbdev-test."
    cells = [''.join(c['source']) for c in json.loads((ROOT/'nbs'/'index.ipynb').read_text())['cells'] if c['cell_type'] == 'code']
    ft = [c for c in cells if 'fickle=True' in c]
    assert len(ft) == 1
    code = ft[0]; ast.parse(code)
    assert len([l for l in code.splitlines() if l.strip()]) <= 11
    for s in ('from noisekd.all import *', 'Learner(', 'Distill(teacher, fickle=True)', 'in_test()', '.fit_one_cycle('):
        assert s in code, s

def test_sidebar_follows_the_story():
    pages = dc.sidebar_pages()
    assert pages[0] == 'index'
    story = ['01_data', '02_models', '03_losses', '04_callbacks', '05_attacks', '06_robustness', '07_train', '08_experiments']
    assert [p for p in pages if p in story] == story

def test_trim_outputs_keeps_small_outputs_and_figures():
    nb = {'cells': [{'cell_type': 'code', 'metadata': {'execution': {'total': 1.0}}, 'source': '', 'outputs': [
        {'output_type': 'stream', 'name': 'stdout', 'text': '\n'.join(f'line {i}' for i in range(100))},
        {'output_type': 'display_data', 'metadata': {}, 'data': {'text/html': '<progress value="3"></progress>'}},
        {'output_type': 'display_data', 'metadata': {}, 'data': {'image/png': 'iVBOR' * 10_000, 'text/plain': 'fig'}},
        {'output_type': 'execute_result', 'metadata': {}, 'execution_count': 1, 'data': {'text/plain': 'x' * 300_000}}]}]}
    c = dc.trim_outputs(nb)['cells'][0]
    test = [o['output_type'] for o in c['outputs']]
    assert test == ['stream', 'display_data', 'stream']                    # progress bar dropped
    assert 'lines cut' in c['outputs'][0]['text'] and c['outputs'][0]['text'].count('\n') < 45
    assert 'image/png' in c['outputs'][1]['data']                           # figures kept whatever their size
    assert 'left out' in c['outputs'][2]['text'] and 'execution' not in c['metadata']

_missing = dc.missing_tools()

@pytest.mark.skipif(bool(_missing), reason="the offline docs check needs " + '; '.join(_missing) +
                    " (not installed here; run `python tools/docs_check.py` where they are)")
def test_docs_check_index_and_callbacks():
    "Run, process, render and load the index and callbacks pages; screenshots for a person to look at."
    r = subprocess.run([sys.executable, str(ROOT/'tools'/'docs_check.py'), 'index', '04_callbacks'], cwd=ROOT,
                       capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
    shots = ROOT/'_docs_check'/'screenshots'
    for page in ('index', '04_callbacks'): assert (shots/f'{page}.png').stat().st_size > 10_000
    html = (ROOT/'_docs_check'/'html'/'callbacks.html').read_text()
    assert 'Distill' in html and 'fickle' in html and 'data:image/png;base64' in html

def _nb(path, size=None):
    nb = {'cells': [], 'metadata': {}, 'nbformat': 4, 'nbformat_minor': 5}
    if size: nb = dc.stamp(nb, size, 1.0)
    path.write_text(json.dumps(nb))

def test_site_problems_refuse_test_size_pages(tmp_path):
    "A chapter built at test size, without a stamp or not at all is not fit to publish; full-size ones are."
    names = dc.chapters()
    for n in names[3:]: _nb(tmp_path/f'{n}.ipynb', 'full')
    assert dc.site_problems(tmp_path, names[3:]) == []
    _nb(tmp_path/f'{names[0]}.ipynb', 'test'); _nb(tmp_path/f'{names[1]}.ipynb')
    probs = dc.site_problems(tmp_path, names)
    assert len(probs) == 3, probs
    assert f'{names[0]}.ipynb was built at test size (IN_TEST set' in probs[0] and '--execute-only --full' in probs[0]
    assert f'{names[1]}.ipynb was built without a size stamp' in probs[1]
    assert f'{names[2]}.ipynb is not in' in probs[2]

def test_check_site_fails_on_a_test_size_build(tmp_path):
    "Run the home page as nbdev-test does (stamped 'test'), then --check-site refuses it, naming the page and the fix."
    out = tmp_path/'dc'
    r = subprocess.run([sys.executable, str(ROOT/'tools'/'docs_check.py'), '--execute-only', '--out', str(out), 'index'],
                       cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert dc.built_size(out/'nbs'/'index.ipynb') == 'test'
    meta = json.loads((out/'nbs'/'index.ipynb').read_text())['metadata']['noisekd_docs']
    assert meta['seconds'] > 0
    r = subprocess.run([sys.executable, str(ROOT/'tools'/'docs_check.py'), '--out', str(out), '--check-site'],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stdout
    assert 'index.ipynb was built at test size' in r.stdout and 'Docs check FAILED' in r.stdout, r.stdout

def test_sidebar_links_named_by_their_title():
    sb = {'website': {'sidebar': {'contents': ['index.ipynb', {'section': 'x', 'contents': [
        {'text': 'teacher.ipynb', 'href': 'https://example.org/teacher.ipynb'}, {'text': 'Train a student (student.ipynb)', 'href': 'https://example.org/s'}]}]}}}
    assert dc.named_by_file(sb) == ['teacher.ipynb']
    assert dc.named_by_file() == []
