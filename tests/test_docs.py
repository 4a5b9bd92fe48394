"The documentation site: built from the notebooks by one command, then opened in headless Chromium as a person would."
import importlib.util, re, time, urllib.parse, urllib.request
from pathlib import Path
import pytest
from browser import chrome, http_server, ARTIFACTS

ROOT = Path(__file__).resolve().parents[1]

def _builder():
    spec = importlib.util.spec_from_file_location('build_docs', ROOT/'scripts'/'build_docs.py')
    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
    return m

@pytest.fixture(scope='module')
def site(tmp_path_factory):
    return _builder().build(tmp_path_factory.mktemp('site')/'docs')

def test_every_notebook_has_a_page(site):
    b = _builder()
    names = [b.page_name(p) for p in b.pages()]
    assert names[0] == 'index.html' and all((site/n).is_file() for n in names)
    nbs = {p.relative_to(ROOT/'nbs').with_suffix('.html').as_posix() for p in (ROOT/'nbs').rglob('*.ipynb') if '.ipynb_checkpoints' not in str(p)}
    assert nbs - {'index.html'} <= set(names)
    for n in names:
        text = (site/n).read_text()
        assert 'class="mf-nav"' in text, n
        assert not re.search(r'<(script|link)[^>]*(src|href)="https?://', text), f'{n} loads something from the internet'

def test_build_refuses_a_non_empty_folder(tmp_path):
    (tmp_path/'keep.txt').write_text('mine')
    with pytest.raises(SystemExit, match='not empty'): _builder().build(tmp_path)
    assert (tmp_path/'keep.txt').read_text() == 'mine'

def test_pages_in_a_browser(site, tmp_path):
    "Every page renders, shows no traceback or error output, its internal links resolve and its images load"
    d = chrome(tmp_path)
    b = _builder()
    names = [b.page_name(p) for p in b.pages()]
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        with http_server(site) as base:
            for n in names:
                d.get(base + n)
                for _ in range(100):
                    if d.execute_script('return document.readyState') == 'complete': break
                    time.sleep(0.1)
                body = d.find_element('tag name', 'body').text
                assert len(body) > 200, f'{n} is (nearly) empty'
                assert 'Traceback (most recent call last)' not in body, f'{n} shows a Python traceback'
                err = d.execute_script("return document.querySelectorAll('[data-mime-type=\"application/vnd.jupyter.stderr\"], .jp-RenderedText[data-mime-type*=\"error\"]').length")
                assert err == 0, f'{n} shows {err} error or stderr output(s)'
                bad = d.execute_script("return Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src.slice(0, 80))")
                assert not bad, f'{n}: images that did not load: {bad}'
                links = d.execute_script("return Array.from(document.querySelectorAll('a[href]')).map(a => a.getAttribute('href'))")
                for h in links:
                    if h.startswith(('http://', 'https://', 'mailto:', '#')): continue
                    url = urllib.parse.urljoin(base + n, h.split('#')[0])
                    with urllib.request.urlopen(url, timeout=5) as r: assert r.status == 200, f'{n}: broken link {h}'
                if n == 'index.html': d.save_screenshot(str(ARTIFACTS/'docs_home.png'))
                if n.startswith('tutorials/') and not (ARTIFACTS/'docs_tutorial.png').exists(): d.save_screenshot(str(ARTIFACTS/'docs_tutorial.png'))
    finally: d.quit()
    assert (ARTIFACTS/'docs_home.png').stat().st_size > 10_000
