"""The documentation site: built from the notebooks by one command (mkdocs-material + mkdocs-jupyter on notebooks
processed by nbdev's processors), then opened in headless Chromium as a person would: sidebar, page contents,
search, dark mode."""
import ast, html, importlib.util, json, re, subprocess, sys, time, urllib.parse, urllib.request
from pathlib import Path
import pytest
from browser import chrome, http_server, ARTIFACTS

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT/'nbs'

def _builder():
    spec = importlib.util.spec_from_file_location('build_docs', ROOT/'scripts'/'build_docs.py')
    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
    return m

@pytest.fixture(scope='module')
def built(tmp_path_factory):
    pytest.importorskip('mkdocs_jupyter', reason='mkdocs-jupyter is not installed (pip install -e ".[dev]")')
    pytest.importorskip('material', reason='mkdocs-material is not installed (pip install -e ".[dev]")')
    b = _builder()
    t0 = time.monotonic()
    # built by its command in a fresh process, as a person builds it: inside this test process, modules imported by
    # earlier tests changed how nbdev printed one signature (`fastai.vision.core.PILImage` for `PILImage`), and that
    # text alone broke lunr's index in the browser (the search answered nothing)
    site = tmp_path_factory.mktemp('site')/'docs'
    r = subprocess.run([sys.executable, str(ROOT/'scripts'/'build_docs.py'), '--out', str(site)], capture_output=True, text=True)
    assert r.returncode == 0, f'build_docs.py failed:\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}'
    print(f'site built in {time.monotonic() - t0:.0f} s')
    return b, site

@pytest.fixture(scope='module')
def site(built): return built[1]

def _text(page_html:str)->str:
    "What a reader sees of a page (roughly): no scripts, styles or tags"
    s = re.sub(r'<(script|style)\b.*?</\1>', ' ', page_html, flags=re.S | re.I)
    return html.unescape(re.sub(r'<[^>]+>', ' ', s))

def _nb_cells(p:Path): return json.loads(p.read_text(encoding='utf-8'))['cells']

def _directives(src:str)->list: return [l[3:].strip() for l in src.splitlines() if l.startswith('#|')]

def _code(src:str)->str: return '\n'.join(l for l in src.splitlines() if not l.startswith('#|')).strip()

def test_every_notebook_has_a_page(built):
    b, site = built
    pgs = b.pages()
    assert pgs[0].url == 'index.html' and pgs[0].src == NBS/'index.ipynb'
    nbs = {p for p in NBS.rglob('*.ipynb') if not any(part[0] in '_.' for part in p.relative_to(NBS).parts)}
    assert {pg.src for pg in pgs} == nbs
    api = [pg for pg in pgs if pg.section == 'API reference']
    assert [pg.src.name for pg in api] == sorted(p.name for p in NBS.glob('[0-9]*.ipynb')), 'API pages are the numbered notebooks, in number order'
    assert {pg.src for pg in pgs if pg.section == 'Tutorials'} == set((NBS/'tutorials').glob('*.ipynb'))
    assert any(pg.src.name == 'reproduction.ipynb' for pg in pgs)
    for pg in pgs:
        assert pg.title == b.title_of(pg.src) and pg.title != pg.src.stem, f'{pg.src}: no `# Title`'
        page = (site/pg.url).read_text(encoding='utf-8')
        assert '<h1' in page and html.escape(pg.title, quote=False) in page, pg.url
        assert not re.search(r'<(script|link|img|iframe)\b[^>]*\b(src|href)="(https?:)?//', page), f'{pg.url} loads something from the internet'
        text = _text(page)
        assert 'show_doc(' not in text, f'{pg.url} shows a show_doc call'
        assert '#|' not in text, f'{pg.url} shows an nbdev directive'
        assert '{target=' not in text, f'{pg.url} shows Quarto link syntax'
    assert (site/'search'/'search_index.json').is_file()

def test_cells_as_nbdev_shows_them(built):
    "Hidden and exported cells are not on the pages; every public exported function or class has a signature card"
    b, site = built
    for pg in b.pages():
        page = (site/pg.url).read_text(encoding='utf-8')
        shown = {html.unescape(t).strip() for t in re.findall(r'<div id="cell-\d+" class="clipboard-copy-txt"[^>]*>(.*?)</div>', page, re.S)}
        ids = set(re.findall(r'\bid="([^"]+)"', page))
        for c in _nb_cells(pg.src):
            if c['cell_type'] != 'code': continue
            src = ''.join(c['source']); d = [x.split(':')[0].split()[0] for x in _directives(src) if x]
            if {'hide', 'export', 'exporti', 'default_exp'} & set(d):
                assert _code(src) not in shown, f'{pg.url} shows a hidden or exported cell:\n{_code(src)[:200]}'
            if 'export' in d:
                for node in ast.parse(_code(src)).body:
                    if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith('_') and not node.decorator_list:
                        assert b.slug(node.name) in ids, f'{pg.url}: no signature card for {node.name}'
        cards = [re.sub(r'<[^>]+>|¶', '', h) for h in re.findall(r'id="cell-id=mf-doc-\d+".*?<h[2-6] [^>]*>(.*?)</h[2-6]>', page, re.S)]
        if pg.section == 'API reference': assert cards, f'{pg.url} has no signature cards'
        assert len(cards) == len(set(cards)), f'{pg.url}: cards shown twice: {sorted(c for c in cards if cards.count(c) > 1)}'

def _nb(*cells):
    def cell(c):
        if isinstance(c, str): c = dict(cell_type='markdown', source=c)
        c = dict(metadata={}, **c)
        if c['cell_type'] == 'code': c.setdefault('outputs', []); c.setdefault('execution_count', None)
        return c
    return dict(cells=[cell(c) for c in cells], metadata={'kernelspec': {'language': 'python', 'name': 'python3', 'display_name': 'Python 3'}},
                nbformat=4, nbformat_minor=5)

def _cell(src, *outputs): return dict(cell_type='code', source=src, outputs=list(outputs))

def test_processing_a_notebook(tmp_path):
    "nbdev's processors, then the translation for mkdocs: on a small notebook with each kind of cell"
    b = _builder()
    card = ('---\n\n[source](https://example.com/x.py#L1){target="_blank" style="float:right; font-size:smaller"}\n\n'
            '### shown_exported\n\n```python\ndef shown_exported()\n```\n\n*Says hi*')
    nb = _nb('# Synthetic\n\n> A page about `nothing`.',
             _cell('#| hide\nsecret_hidden = 1'),
             _cell('#| export\ndef exported_hidden(): pass'),
             _cell('#| exports\ndef shown_exported(): pass'),
             _cell('show_doc(shown_exported)', dict(output_type='execute_result', execution_count=1, metadata={},
                                                    data={'text/markdown': card, 'text/plain': 'x'})),
             'Grows as $T^2$, see [the other page](sub/02_other.ipynb#part) and ![a figure](images/f.png); `$x$` stays.',
             _cell('w', dict(output_type='display_data', metadata={}, data={'application/vnd.jupyter.widget-view+json': {'model_id': 'x'}, 'text/plain': 'w'})),
             _cell('#| echo: false\nprint("only the output")', dict(output_type='stream', name='stdout', text='only the output\n')))
    (tmp_path/'sub').mkdir(); (tmp_path/'images').mkdir(); (tmp_path/'images'/'f.png').write_bytes(b'png')
    (tmp_path/'01_synthetic.ipynb').write_text(json.dumps(nb))
    (tmp_path/'sub'/'02_other.ipynb').write_text(json.dumps(_nb('# Other\n\n## Part')))
    pgs = [b.Page(tmp_path/'01_synthetic.ipynb', 'synthetic.html', 'Synthetic', 'API reference'),
           b.Page(tmp_path/'sub'/'02_other.ipynb', 'sub/other.html', 'Other', 'Sub')]
    site = b.Site(pgs, nbs=tmp_path)
    from fastcore.xtras import working_directory
    with working_directory(ROOT): out = b.process(pgs[0], site)
    b.relink(out, pgs[0], site)
    cells = [(c.cell_type, c.source, c.get('outputs', []), c.metadata.get('tags', [])) for c in out.cells]
    src = '\n'.join(c[1] for c in cells)
    assert cells[0][:2] == ('markdown', '# Synthetic\n\n> A page about `nothing`.')
    assert 'secret_hidden' not in src and 'exported_hidden' not in src, 'hidden and exported cells are removed'
    fold = next(c[1] for c in cells if 'mf-fold' in c[1])
    assert '<summary>Exported source</summary>' in fold and 'def shown_exported(): pass' in fold and ' open>' in fold
    cards = [c for c in out.cells if c.get('id', '').startswith('mf-doc-')]
    assert len(cards) == 1 and cards[0].cell_type == 'markdown' and '### shown_exported' in cards[0].source
    assert '<a href="https://example.com/x.py#L1" target="_blank" style="float:right; font-size:smaller" rel="noopener">source</a>' in cards[0].source
    assert 'show_doc(' not in src and '#|' not in src and '{target=' not in src
    assert '<span class="mf-math"><em>T</em><sup>2</sup></span>' in src and '`$x$`' in src
    assert '[the other page](sub/other.html#part)' in src and '![a figure](images/f.png)' in src and site.files == {'images/f.png'}
    widget = next(c for c in cells if c[2] and 'text/html' in c[2][0].get('data', {}))
    assert 'voila nbs/01_synthetic.ipynb' in widget[2][0]['data']['text/html'] and 'widgets' not in out.metadata
    printed = next(c for c in cells if c[2] and c[2][0].get('name') == 'stdout')
    assert printed[3] == ['remove_input'] and printed[1] == 'print("only the output")'

def test_internal_links_resolve(built):
    "Every relative link of every page leads to a file of the site, and its #anchor to an element of that page; nbdev's symbol links stay on the site"
    b, site = built
    files = sorted(site.rglob('*.html'))
    ids = {f.relative_to(site).as_posix(): set(re.findall(r'\bid="([^"]+)"', f.read_text(encoding='utf-8'))) for f in files}
    n = 0
    for f in files:
        name = f.relative_to(site).as_posix()
        page = re.sub(r'<(script|style)\b.*?</\1>', '', f.read_text(encoding='utf-8'), flags=re.S)
        for h in re.findall(r'<(?:a|link|img)\b[^>]*\b(?:href|src)="([^"]+)"', page):
            h = html.unescape(h)
            assert not h.startswith(b._doc_base()), f'{name}: {h} points at the hosted docs, not at this site'
            if re.match(r'^([a-z][a-z0-9+.-]*:|//)', h, re.I): continue
            u = urllib.parse.urlparse(urllib.parse.urljoin(f'http://site/{name}', h))
            path = urllib.parse.unquote(u.path).lstrip('/') or 'index.html'
            assert (site/path).is_file(), f'{name}: broken link {h}'
            if u.fragment and path in ids: assert u.fragment in ids[path], f'{name}: link {h} has no target on {path}'
            n += 1
    assert n > 100

def test_pages_are_discovered(tmp_path):
    "Pages come from the notebooks there are, whatever their names: split or renumbered notebooks need no change here"
    b = _builder()
    names = ['index', '00_data', '02_backbones', '02a_heads', '02b_model', '10_cli', 'reproduction', 'notes',
             'tutorials/02_more', 'tutorials/01_start', '_draft', '.ipynb_checkpoints/00_data-checkpoint', 'extra/01_thing']
    for n in names:
        f = tmp_path/f'{n}.ipynb'; f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps(_nb(f'# Title of {Path(n).name}\n\n> About it.')))
    pgs = b.pages(tmp_path)
    assert [(pg.url, pg.section) for pg in pgs] == [
        ('index.html', ''), ('data.html', 'API reference'), ('backbones.html', 'API reference'), ('heads.html', 'API reference'),
        ('model.html', 'API reference'), ('cli.html', 'API reference'), ('tutorials/start.html', 'Tutorials'),
        ('tutorials/more.html', 'Tutorials'), ('reproduction.html', ''), ('notes.html', 'More'), ('extra/thing.html', 'Extra')]
    assert pgs[2].title == 'Title of 02_backbones'
    nav = b._nav(pgs)
    assert nav[0] == {'Home': 'index.ipynb'} and nav[1] == {'API reference': [{f'Title of {n}': f'{u}.ipynb'} for n, u in
        [('00_data', 'data'), ('02_backbones', 'backbones'), ('02a_heads', 'heads'), ('02b_model', 'model'), ('10_cli', 'cli')]]}
    (tmp_path/'05_model.ipynb').write_text(json.dumps(_nb('# Another model')))
    with pytest.raises(SystemExit, match='would both be model.html'): b.pages(tmp_path)

def test_build_refuses_a_non_empty_folder(tmp_path):
    (tmp_path/'keep.txt').write_text('mine')
    with pytest.raises(SystemExit, match='not empty'): _builder().build(tmp_path)
    assert (tmp_path/'keep.txt').read_text() == 'mine'
    with pytest.raises(SystemExit, match='refusing'): _builder().build(ROOT, force=True)

def _wait(d, cond, *args, timeout=30, what='condition'):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (v := d.execute_script(cond, *args)): return v
        time.sleep(0.1)
    raise AssertionError(f'timed out waiting for {what}')

def _load(d, url):
    d.get(url)
    _wait(d, "return document.readyState == 'complete'", what=f'{url} to load')

def test_pages_in_a_browser(built, tmp_path):
    "Every page renders without errors, loads its images and nothing from beyond this machine"
    b, site = built
    d = chrome(tmp_path)
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        with http_server(site) as base:
            for pg in b.pages():
                _load(d, base + pg.url)
                body = d.find_element('tag name', 'body').text
                assert len(body) > 200, f'{pg.url} is (nearly) empty'
                assert 'Traceback (most recent call last)' not in body, f'{pg.url} shows a Python traceback'
                err = d.execute_script("return document.querySelectorAll('[data-mime-type=\"application/vnd.jupyter.stderr\"], [data-mime-type*=\"error\"]').length")
                assert err == 0, f'{pg.url} shows {err} error or stderr output(s)'
                bad = d.execute_script("return Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src.slice(0, 80))")
                assert not bad, f'{pg.url}: images that did not load: {bad}'
                remote = d.execute_script("return performance.getEntriesByType('resource').map(e => e.name).filter(n => !n.startsWith(arguments[0]) && !n.startsWith('data:'))", base)
                assert not remote, f'{pg.url} requested {remote}'
                if pg.url == 'index.html': d.save_screenshot(str(ARTIFACTS/'docs_home.png'))
                if pg.section == 'Tutorials' and not (ARTIFACTS/'docs_tutorial.png').exists(): d.save_screenshot(str(ARTIFACTS/'docs_tutorial.png'))
    finally: d.quit()
    assert (ARTIFACTS/'docs_home.png').stat().st_size > 10_000

def test_navigation_search_and_dark_mode(built, tmp_path):
    "The sidebar lists every page and leads to them, an API page has its table of contents, search finds th_pix, the toggle switches to the dark palette"
    b, site = built
    pgs = b.pages()
    api = next(pg for pg in pgs if pg.section == 'API reference')
    tut = next(pg for pg in pgs if pg.section == 'Tutorials')
    d = chrome(tmp_path)
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        with http_server(site) as base:
            # sidebar: every page, its sections, the current page marked; a click leads to the page
            _load(d, base + api.url)
            nav = d.execute_script("""const n = document.querySelector('nav.md-nav--primary');
                return {links: Array.from(n.querySelectorAll('a.md-nav__link[href]')).map(a => new URL(a.href).pathname),
                        text: n.innerText, active: Array.from(n.querySelectorAll('a.md-nav__link--active')).map(a => new URL(a.href).pathname)}""")
            for pg in pgs: assert '/' + pg.url in nav['links'], f'the sidebar has no link to {pg.url}'
            assert 'API reference' in nav['text'] and 'Tutorials' in nav['text']
            assert nav['active'] == ['/' + api.url]
            d.execute_script("Array.from(document.querySelectorAll('nav.md-nav--primary a.md-nav__link')).find(a => a.getAttribute('href').endsWith(arguments[0])).click()", tut.url)
            _wait(d, f"return location.pathname == '/{tut.url}' && document.readyState == 'complete'", what='the sidebar link')
            assert tut.title in d.find_element('tag name', 'h1').text

            # table of contents of an API page: its sections and signature cards, every entry leads to its heading
            _load(d, base + api.url)
            toc = d.execute_script("""return Array.from(document.querySelectorAll('nav.md-nav--secondary a.md-nav__link')).map(a => [a.getAttribute('href'), a.innerText.trim()])""")
            assert len(toc) >= 3, f'{api.url}: table of contents {toc}'
            for href, _ in toc:
                assert href.startswith('#') and d.execute_script('return document.getElementById(arguments[0]) !== null', urllib.parse.unquote(href[1:])), f'{api.url}: contents entry {href} leads nowhere'
            cards = d.execute_script("return Array.from(document.querySelectorAll('[id^=\"cell-id=mf-doc-\"] :is(h2,h3)')).map(h => h.id)")
            assert cards and set(cards) <= {h[1:] for h, _ in toc}, 'the signature cards (level 2-3) are in the table of contents'
            d.execute_script("document.querySelector('nav.md-nav--secondary a.md-nav__link[href=\"#' + arguments[0] + '\"]').click()", cards[min(1, len(cards) - 1)])
            _wait(d, "return location.hash == '#' + arguments[0]", cards[1], what='the contents entry to be followed')
            time.sleep(0.5)
            d.save_screenshot(str(ARTIFACTS/'docs_api.png'))

            # search (lunr in a web worker, from the site's own files): th_pix -> results -> a page that has it
            _load(d, base + 'index.html')
            box = d.find_element('css selector', 'input.md-search__input')
            box.click()
            meta = "return (document.querySelector('.md-search-result__meta') || {}).innerText"
            def stuck(what):   # what the search shows and what the browser logged, for a failure's message
                logs = [f"{e['level']} {e['message'][:300]}" for e in d.get_log('browser')]
                return f'{what}; the search says {d.execute_script(meta)!r}, the box holds {box.get_attribute("value")!r}; browser log: {logs}'
            # the worker fetches search_index.json and builds lunr's index; material shows "Initializing search" until then
            try: _wait(d, meta + " != 'Initializing search' ", timeout=120, what='the search worker to be ready')
            except AssertionError as e: raise AssertionError(stuck(str(e))) from None
            box.send_keys('th_pix')
            results = "return document.querySelectorAll('.md-search-result__item').length"
            try: n = _wait(d, results, timeout=60, what='search results for th_pix')
            except AssertionError as e: raise AssertionError(stuck(str(e))) from None
            assert n > 0
            d.save_screenshot(str(ARTIFACTS/'docs_search.png'))
            href = d.execute_script("return document.querySelector('.md-search-result__item a').href")
            assert href.startswith(base)
            d.execute_script("document.querySelector('.md-search-result__item a').click()")
            _wait(d, f"return location.href != '{base}index.html' && document.readyState == 'complete'", what='the search result to open')
            assert 'th_pix' in d.find_element('tag name', 'body').text, f'{d.current_url} does not mention th_pix'

            # dark mode: the palette toggle switches the colour scheme and the page background
            _load(d, base + api.url)
            scheme = "return [document.body.getAttribute('data-md-color-scheme'), getComputedStyle(document.body).backgroundColor]"
            light = d.execute_script(scheme)
            d.execute_script("Array.from(document.querySelectorAll('form[data-md-component=palette] label.md-header__button')).find(l => l.offsetParent !== null).click()")
            dark = _wait(d, "const s = document.body.getAttribute('data-md-color-scheme'); return s != arguments[0] && [s, getComputedStyle(document.body).backgroundColor]", light[0], what='the dark palette')
            assert light[0] == 'default' and dark[0] == 'slate' and dark[1] != light[1], (light, dark)
            lum = lambda rgb: sum(int(v) for v in re.findall(r'\d+', rgb)[:3])
            assert lum(dark[1]) < lum(light[1])
            code_bg = d.execute_script("const e = document.querySelector('.jupyter-wrapper .highlight-ipynb'); return e && getComputedStyle(e).backgroundColor")
            assert code_bg is None or lum(code_bg) < 300, f'notebook code cells stay light in the dark palette: {code_bg}'
            d.save_screenshot(str(ARTIFACTS/'docs_dark.png'))
    finally: d.quit()
