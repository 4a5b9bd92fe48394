"""Build the documentation site: mkdocs-material (search, sidebar navigation, page table of contents, light/dark
palette) with mkdocs-jupyter rendering the notebooks, after nbdev's own notebook processors have turned them into
documentation pages as `nbdev-proc-nbs` does for Quarto.

    python scripts/build_docs.py                 # -> _docs/, then: python -m http.server -d _docs
    python scripts/build_docs.py --out site --force

Pages are discovered in nbs/ (folders and files starting with `_` or `.` skipped, as nbdev does): the home page
(index.ipynb, from which README.md is made), the API reference (the numbered notebooks, in number order), the
tutorials (nbs/tutorials/), the reproduction report, then any other notebook. A page's address is nbdev's own
(`nbpath2html`: numeric prefix dropped, `03_predict.ipynb` -> `predict.html`), so nbdev's symbol links resolve and
addresses survive a renumbering. The title is the notebook's `# Title`.

Quarto (what `nbdev-docs` needs) cannot be installed here, so the notebooks go through nbdev's processors
(`nbdev.processors.FilterDefaults`, the list `nbdev-proc-nbs` runs) and then through a small translation of what
Quarto would have done with the result:

- `#| hide`, `#| export`, `#| exporti` and `#| default_exp` cells are removed (`rm_export`, `hide_`); `#| exports`
  cells become an open "Exported source" fold (`add_fold`, then a `<details>` block here);
- exported functions and classes without a `show_doc` cell get one (`add_show_docs`); every `show_doc` cell
  (`clean_show_doc`: `echo: false`, `output: asis`) becomes its rendered signature card(s): the cell's committed
  markdown output, the call itself never shown. nbdev renders the cards it adds by running the notebook's code in a
  kernel (`exec_show_docs`); the notebooks are not run here: a card the notebook has no output for (the cells
  `add_show_docs` adds; all but the last call of a cell with several `show_doc` calls, which Jupyter does not
  display) is rendered with `show_doc` on the object of this checkout's `mess_fast` (what `nbdev-export` made from
  the same cells);
- backquoted names link to their cards (`add_links`), made relative to this site (to the page alone for a symbol
  without a card); links between notebooks (`x.ipynb`) point at their pages; README-style paths (`nbs/images/...`)
  are made relative; links to other files of the repository point at the repository; Quarto's
  `[x](y){target=...}` becomes a plain HTML link;
- the remaining `#|` lines are read (`echo`, `output`, `include`, `code-fold`) and stripped; simple inline math
  (`$T^2$`) becomes HTML, since MathJax would come from a CDN;
- interactive widget outputs (whose JavaScript would come from a CDN) become a note saying how to run them.

Notebooks are not executed: they are committed with their outputs (images included). Nothing on the site is
loaded from the internet: no web fonts, no CDN scripts (scripts/docs/hooks.py removes the notebook template's
MathJax and Mermaid loaders and fails the build if any remote script or stylesheet is left). mkdocs' config and
the processed notebooks live in a temporary folder; only the output folder is written.
"""
import ast, html, importlib, json, os, re, shutil, subprocess, sys, tempfile, time, warnings
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urljoin

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT/'nbs'
ASSETS = Path(__file__).resolve().parent/'docs'   # extra.css and the mkdocs hooks
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))   # document this checkout's mess_fast

import yaml
from fastcore.nbio import read_nb, write_nb, mk_cell, md_frontmatter
from fastcore.script import call_parse
from fastcore.xtras import working_directory
from nbdev.config import get_config, nbpath2html
from nbdev.process import NBProcessor, Processor
from nbdev.processors import FilterDefaults, exec_show_docs, insert_warning

# ------------------------------------------------------------------------------------------------ the pages

@dataclass
class Page:
    src: Path       # the notebook
    url: str        # its page, relative to the site root ('predict.html', 'tutorials/mess_in_15_minutes.html')
    title: str      # the notebook's `# Title`
    section: str    # sidebar section ('' for a top-level page)

def _skipped(rel:Path)->bool: return any(p[0] in '_.' for p in rel.parts) or '.ipynb_checkpoints' in rel.parts

def notebooks(nbs=NBS)->list:
    "Every notebook of the site, as nbdev globs them (nothing under a `_` or `.` name)"
    return sorted(p for p in nbs.rglob('*.ipynb') if not _skipped(p.relative_to(nbs)))

def page_name(nb:Path, nbs=NBS)->str:
    "The page of notebook `nb`: nbdev's address (numeric prefix dropped, lower case); index.ipynb is index.html"
    rel = Path(nb).relative_to(nbs)
    return 'index.html' if rel.as_posix() == 'index.ipynb' else nbpath2html(rel).as_posix()

def title_of(nb:Path)->str:
    "The `# Title` of the first markdown cell (nbdev's frontmatter title), else the file name"
    cells = json.loads(Path(nb).read_text(encoding='utf-8'))['cells']
    md = next((''.join(c['source']) for c in cells if c['cell_type'] == 'markdown'), '')
    return md_frontmatter(md).get('title') or Path(nb).stem

def _order(p:Path, nbs:Path):
    rel = p.relative_to(nbs)
    if rel.as_posix() == 'index.ipynb': return (0, '', '')
    if len(rel.parts) == 1 and rel.name[0].isdigit(): return (1, '', rel.name)
    if rel.parts[0] == 'tutorials': return (2, '', rel.as_posix())
    if rel.as_posix() == 'reproduction.ipynb': return (3, '', '')
    return (4, rel.parent.as_posix() if len(rel.parts) > 1 else '', rel.as_posix())

def _section(p:Path, nbs:Path)->str:
    rel = p.relative_to(nbs)
    if rel.as_posix() in ('index.ipynb', 'reproduction.ipynb'): return ''
    if len(rel.parts) == 1: return 'API reference' if rel.name[0].isdigit() else 'More'
    return 'Tutorials' if rel.parts[0] == 'tutorials' else rel.parts[0].replace('_', ' ').capitalize()

def pages(nbs=NBS)->list:
    "The site's pages in order: home (index), API reference (numbered notebooks), tutorials, reproduction report, others"
    nbs = Path(nbs)
    res = [Page(p, page_name(p, nbs), title_of(p), _section(p, nbs)) for p in sorted(notebooks(nbs), key=lambda p: _order(p, nbs))]
    if not res or res[0].url != 'index.html': raise SystemExit(f'{nbs/"index.ipynb"} is missing: it is the home page')
    seen = {}
    for pg in res:
        if pg.url in seen: raise SystemExit(f'{seen[pg.url].src} and {pg.src} would both be {pg.url}: rename one')
        seen[pg.url] = pg
    return res

# ------------------------------------------------------------------------------------------------ links

def _rel(target:str, frm:str)->str:
    "Relative address of site path `target` from the page at site path `frm`"
    return os.path.relpath(target, str(PurePosixPath(frm).parent) or '.').replace(os.sep, '/')

def slug(s:str)->str:
    "The id mkdocs-jupyter gives a heading (so nbdev's `#name` anchors can be rewritten to it)"
    from mkdocs_jupyter.utils import slugify
    return slugify(s)

def _doc_base()->str:
    "Where nbdev's symbol links point (doc_host + doc_baseurl of the library's _modidx)"
    try:
        s = importlib.import_module(f'{get_config(ROOT).lib_path.name}._modidx').d['settings']
        return urljoin(s['doc_host'] + '/', s['doc_baseurl'].strip('/')) + '/'
    except Exception: return '\0'   # no index: no symbol links to rewrite

def _repo_url()->str:
    try:
        import configparser
        c = configparser.ConfigParser(); c.read(ROOT/'settings.ini')
        return f"{c['DEFAULT']['git_url'].rstrip('/')}/blob/{c['DEFAULT'].get('branch', 'main')}/"
    except Exception: return ''

class Site:
    "What link rewriting needs: every page by notebook and by address, and the files the pages use"
    def __init__(self, pgs, nbs=NBS):
        self.nbs, self.pages = Path(nbs).resolve(), pgs
        self.by_src = {pg.src.resolve(): pg for pg in pgs}
        self.by_url = {pg.url: pg for pg in pgs}
        self.doc_base, self.repo = _doc_base(), _repo_url()
        self.files = set()   # files under nbs/ the pages link to or show (copied to the site)
        self.anchors = {}    # page -> the ids of its headings

    def url(self, u:str, page:Page)->str:
        "Link `u` as written in `page`'s notebook -> as it works on the site"
        if u.startswith(self.doc_base):   # nbdev symbol link: `predict.html#th_pix` on the future hosted site
            path, _, anchor = u[len(self.doc_base):].partition('#')
            if path not in self.by_url: return u
            a = slug(anchor)   # a symbol without a card (a private helper, say): the page it is defined in
            return _rel(path, page.url) + (f'#{a}' if a and a in self.anchors.get(path, ()) else '')
        if re.match(r'^([a-z][a-z0-9+.-]*:|#|//)', u, re.I): return u
        path, _, anchor = u.partition('#')
        anchor = f'#{anchor}' if anchor else ''
        for base in (page.src.parent, ROOT):   # as written, then README-style (relative to the repository)
            f = (base/path).resolve()
            if not f.exists(): continue
            if f in self.by_src: return _rel(self.by_src[f].url, page.url) + anchor
            if f.is_file() and f.is_relative_to(self.nbs):
                rel = f.relative_to(self.nbs).as_posix()
                self.files.add(rel)
                return _rel(rel, page.url) + anchor
            if f.is_relative_to(ROOT) and self.repo: return self.repo + f.relative_to(ROOT).as_posix() + anchor
        return u

# Fenced code blocks are left alone, and so are inline code spans (but not a link whose text is code)
_FENCE = re.compile(r'^(```|~~~).*?^\1[^\n]*$', re.M | re.S)

def _split(rx, s):
    "`s` cut into [text, match, text, match, ..., text]"
    out, last = [], 0
    for m in rx.finditer(s): out += [s[last:m.start()], m]; last = m.end()
    return out + [s[last:]]

_MD_LINK = re.compile(r'(?P<label>!?\[(?:[^\[\]]|\[[^\]]*\])*\])\(\s*<?(?P<url>[^)\s>]+)>?(?P<title>\s+"[^"]*")?\s*\)(?P<attrs>\{[^}\n]*\})?')
_HTML_URL = re.compile(r'\b(?P<attr>src|href)="(?P<url>[^"]+)"')
_TOKEN = re.compile(f'(?P<link>{_MD_LINK.pattern})|(?P<code>(?P<ticks>`+).+?(?P=ticks))', re.S)

def _quarto_attrs(attrs:str)->str:
    "Quarto's link attributes `{target=\"_blank\" style=...}` as HTML attributes (classes `.x` and ids `#x` too)"
    out, cls = [], []
    for m in re.finditer(r'([\w-]+)=("[^"]*"|\S+)|\.([\w-]+)|#([\w-]+)', attrs[1:-1]):
        if m[1]: out.append(f'{m[1]}="{html.escape(m[2].strip(chr(34)), quote=True)}"')
        elif m[3]: cls.append(m[3])
        elif m[4]: out.append(f'id="{m[4]}"')
    if cls: out.append(f'class="{" ".join(cls)}"')
    if 'target="_blank"' in out: out.append('rel="noopener"')
    return ' '.join(out)

def fix_links(md:str, page:Page, site:Site)->str:
    """Markdown links and HTML src/href of `page` made to work on the site, Quarto link attributes as HTML links,
    simple inline math as HTML; code (fenced blocks, inline spans) left as written"""
    def _link(m):
        url = site.url(m['url'], page)
        if not m['attrs'] or m['label'].startswith('!'): return f"{m['label']}({url}{m['title'] or ''})"   # image attributes: dropped
        return f'<a href="{html.escape(url, quote=True)}" {_quarto_attrs(m["attrs"])}>{m["label"][1:-1]}</a>'
    def _text(s):
        s = _HTML_URL.sub(lambda m: f'{m["attr"]}="{html.escape(site.url(html.unescape(m["url"]), page), quote=True)}"', s)
        return inline_math(s)
    def _prose(s):
        return ''.join(_text(t) if isinstance(t, str) else _link(t) if t['link'] else t.group(0) for t in _split(_TOKEN, s))
    return ''.join(_prose(t) if isinstance(t, str) else t.group(0) for t in _split(_FENCE, md))

# ------------------------------------------------------------------------------------------------ inline math

_MATH = re.compile(r'(?<![\\$\w])\$(?=\S)(?P<tex>[^$\n]+?)(?<=\S)\$(?![\w$])')

def _tex(s:str):
    "HTML for simple TeX (letters, digits, operators, ^ and _ with or without braces); None for anything else"
    if not re.fullmatch(r'[A-Za-z0-9 ^_{}+\-=()/.,|<>*]*', s) or s.count('{') != s.count('}'): return None
    out, i = [], 0
    while i < len(s):
        c = s[i]
        if c in '^_':
            if i + 1 >= len(s): return None
            if s[i+1] == '{':
                j = s.index('}', i + 1); inner = _tex(s[i+2:j]); i = j + 1
            else: inner = _tex(s[i+1]); i += 2
            if inner is None: return None
            t = 'sup' if c == '^' else 'sub'; out.append(f'<{t}>{inner}</{t}>'); continue
        if c.isalpha():
            j = i
            while j < len(s) and s[j].isalpha(): j += 1
            out.append(f'<em>{s[i:j]}</em>'); i = j; continue
        if c in '{}': i += 1; continue
        out.append(html.escape(c)); i += 1
    return ''.join(out)

def inline_math(s:str)->str:
    "Simple inline `$...$` math as HTML (no MathJax: it would come from a CDN); other math is left as written"
    return _MATH.sub(lambda m: (f'<span class="mf-math">{t}</span>' if (t := _tex(m['tex'])) is not None else m.group(0)), s)

# ------------------------------------------------------------------------------------------------ processors

_SHOWDOC = re.compile(r'^show_doc', re.M)   # what nbdev's `clean_show_doc` takes for a show_doc cell

class fill_show_docs(Processor):
    """nbdev's `exec_show_docs` without running the notebook. A `show_doc` cell keeps its committed cards (its
    markdown outputs); the calls it has no card for get `show_doc`'s card of that object of this checkout's library
    module: the cells `add_show_docs` adds, and the cells with several `show_doc` calls, of which Jupyter (and so
    the committed notebook, and nbdev) shows only the last one's.

    A cell `add_show_docs` added for a patched method the notebook documents itself elsewhere (nbdev compares the
    bare function name, `snap`, with the documented `ExitExplorer.snap`, so it adds a second card) is dropped."""
    def begin(self):
        exp = next((c.directives_['default_exp'] for c in self.nb.cells if c.cell_type == 'code' and 'default_exp' in c.directives_), None)
        self.mod = f'{get_config(ROOT).lib_path.name}.{exp.split()[0]}' if exp else None
        self.documented = {_call_name(call) for c in self.nb.cells if not c.get('has_sd') for call in _showdoc_calls(c)}

    def _card(self, call):
        "The card of one `show_doc(...)` call, rendered from the library"
        name = ast.unparse(call.args[0])
        kw = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
        if not self.mod: raise ValueError('the notebook has no default_exp')
        obj = mod = importlib.import_module(self.mod)
        if not Path(mod.__file__).resolve().is_relative_to(ROOT): raise ImportError(f'{self.mod} comes from {mod.__file__}, not from {ROOT}')
        for part in name.split('.'): obj = getattr(obj, part)
        from nbdev.showdoc import show_doc
        return show_doc(obj, **kw)._repr_markdown_()

    def cell(self, cell):
        if not (calls := _showdoc_calls(cell)): return
        if cell.get('has_sd') and {_call_name(c) for c in calls} <= self.documented: del cell['source']; return
        outs = [o for o in cell.get('outputs', []) if 'text/markdown' in o.get('data', {})]
        if len(outs) >= len(calls): return
        committed = {_card_name(o['data']['text/markdown']): o for o in outs}
        new = []
        for call in calls:
            if (name := _call_name(call)) in committed: new.append(committed[name]); continue
            try: new.append(dict(output_type='display_data', metadata={}, data={'text/markdown': self._card(call)}))
            except Exception as e:
                warnings.warn(f'{getattr(self.nb, "path_", "?")}: no signature card for `{ast.unparse(call)}` ({type(e).__name__}: {e})')
        if new: cell.outputs = new
        else: del cell['source']

def _showdoc_calls(cell)->list:
    "The `show_doc(x, ...)` calls of a show_doc cell (as nbdev's `clean_show_doc` tells them: a line starting `show_doc`)"
    if cell.cell_type != 'code' or not _SHOWDOC.search(cell.source or ''): return []
    code = '\n'.join(l for l in cell.source.splitlines() if not l.lstrip().startswith('#|')).strip()
    try: body = ast.parse(code).body
    except SyntaxError: return []
    return [t.value for t in body if isinstance(t, ast.Expr) and isinstance(t.value, ast.Call)
            and getattr(t.value.func, 'id', None) == 'show_doc' and t.value.args]

def _call_name(call)->str:
    "The name the card of `show_doc(x, ...)` is titled with: `name=` if given, else `x` as written"
    kw = {k.arg: k.value for k in call.keywords}
    return ast.literal_eval(kw['name']) if 'name' in kw else ast.unparse(call.args[0])

def _card_name(md:str)->str:
    "The name a show_doc card is titled with"
    m = re.search(r'^#+\s+(.+?)\s*$', md, re.M)
    return m[1].strip('`') if m else ''

_QUARTO_LINE = re.compile(r'^\s*#\|\s*([\w-]+)\s*:?\s*(.*?)\s*$')

def _quarto_opts(src:str):
    "The leading `#| key: value` lines of a processed cell (Quarto's cell options) and the code after them"
    lines, opts = src.splitlines(), {}
    while lines and (m := _QUARTO_LINE.match(lines[0])): opts[m[1]] = m[2].strip('"\''); lines.pop(0)
    return opts, '\n'.join(l for l in lines if not _QUARTO_LINE.match(l)).strip('\n')

def _false(v): return str(v).lower() == 'false'

def _md_outs(outputs)->list: return [o['data']['text/markdown'] for o in outputs if 'text/markdown' in o.get('data', {})]

def _card(md:str)->str:
    "show_doc's markdown as a card: its opening rule dropped (the card has a border)"
    return re.sub(r'^\s*---\s*\n', '', md).strip()

_WIDGET = 'application/vnd.jupyter.widget-view+json'

class to_mkdocs(Processor):
    """What Quarto does with a processed notebook, for mkdocs-jupyter: frontmatter as title and description, cell
    options applied then stripped, signature cards and folds as markdown, widgets as a note (links: `relink`)"""
    page, site = None, None   # set by `process` on a subclass per page (nbdev instantiates processors with the notebook only)

    def end(self):
        nb, out, n = self.nb, [], 0
        fm = getattr(nb, 'frontmatter_', {}) or {}
        if fm.get('title'):
            desc = f"\n\n> {fm['description']}" if fm.get('description') else ''
            out.append(mk_cell(f"# {fm['title']}{desc}", 'markdown', id='mf-title'))
        for c in nb.cells:
            c.pop('has_sd', None)
            if c.cell_type == 'raw' and c.source.lstrip().startswith('---'): continue   # frontmatter, shown above
            if c.cell_type == 'markdown':
                out.append(c); continue
            if c.cell_type != 'code': out.append(c); continue
            opts, code = _quarto_opts(c.source)
            if _false(opts.get('include')): continue
            if opts.get('output') == 'asis':   # show_doc: its markdown outputs, inline, as cards
                for md in _md_outs(c.get('outputs', [])):
                    n += 1; out.append(mk_cell(_card(md), 'markdown', id=f'mf-doc-{n}'))
                continue
            if 'code-fold' in opts and code:   # `#| exports`: the source, folded as Quarto folds it
                summary = html.escape(opts.get('code-summary') or 'Code')
                fold = f'<details class="mf-fold"{" open" if opts["code-fold"] == "show" else ""}><summary>{summary}</summary>\n\n```python\n{code}\n```\n\n</details>'
                out.append(mk_cell(fold, 'markdown')); code = ''
            c.source = code
            if _false(opts.get('output')): c.outputs = []
            if _false(opts.get('echo')) or not code: c.setdefault('metadata', {}).setdefault('tags', []).append('remove_input')
            c.outputs = [self._output(o) for o in c.get('outputs', [])]
            if not code and not c.outputs: continue
            out.append(c)
        nb.cells = out
        nb.metadata.pop('widgets', None)   # the template would load the widget manager from a CDN

    def _output(self, o):
        data = o.get('data', {})
        if _WIDGET in data:
            src = self.page.src.relative_to(self.site.nbs).as_posix() if self.page else 'the notebook'
            return dict(output_type='display_data', metadata={}, data={'text/html':
                f'<p class="mf-widget-note"><em>An interactive widget appears here when the notebook runs in Jupyter, or in '
                f'voila: <code>voila nbs/{html.escape(src)}</code>.</em></p>'})
        return o

_HEADING = re.compile(r'^#{1,6}\s+(.+?)\s*#*\s*$', re.M)

def anchors(nb)->set:
    "The ids mkdocs-jupyter will give the headings of markdown cells (what links to this page may point at)"
    res = set()
    for c in nb.cells:
        if c.cell_type != 'markdown': continue
        for t in _split(_FENCE, c.source):
            if isinstance(t, str):
                for h in _HEADING.findall(t): res.add(slug(re.sub(r'\[([^\]]*)\]\([^)]*\)', r'\1', h).replace('`', '')))
    return res

def relink(nb, page:Page, site:Site):
    "Links of markdown cells and markdown outputs made to work on the site (`fix_links`)"
    for c in nb.cells:
        if c.cell_type == 'markdown': c.source = fix_links(c.source, page, site)
        for o in c.get('outputs', []):
            d = o.get('data', {})
            if 'text/markdown' in d and 'text/html' not in d: d['text/markdown'] = fix_links(d['text/markdown'], page, site)

class DocsProcs(FilterDefaults):
    "nbdev's documentation processors, without a kernel (`fill_show_docs` for `exec_show_docs`) and without the 'do not edit' comment"
    def base_procs(self):
        return [fill_show_docs if p is exec_show_docs else p for p in super().base_procs() if p is not insert_warning]

def process(page:Page, site:Site):
    "`page`'s notebook through nbdev's processors and `to_mkdocs` (its links are made to work by `relink`, once every page is known)"
    nb = read_nb(page.src)
    nb.path_ = str(page.src)
    procs = DocsProcs().procs() + [type('to_mkdocs_page', (to_mkdocs,), dict(page=page, site=site))]
    NBProcessor(nb=nb, procs=procs, rm_directives='quarto').process()
    return nb

# ------------------------------------------------------------------------------------------------ mkdocs

def _nav(pgs)->list:
    nav, sections = [], {}
    for pg in pgs:
        item = {('Home' if pg.url == 'index.html' else pg.title): pg.url.removesuffix('.html') + '.ipynb'}
        if not pg.section: nav.append(item); continue
        if pg.section not in sections: sections[pg.section] = []; nav.append({pg.section: sections[pg.section]})
        sections[pg.section].append(item)
    return nav

def mkdocs_config(pgs, docs:Path, out:Path)->dict:
    "The mkdocs.yml of the site: material theme (no web fonts), light/dark toggle, search, mkdocs-jupyter"
    home = pgs[0]
    scheme = lambda media, name, icon, to: {'media': f'(prefers-color-scheme: {media})', 'scheme': name, 'primary': 'indigo',
                                           'accent': 'indigo', 'toggle': {'icon': icon, 'name': f'Switch to {to} mode'}}
    return {
        'site_name': home.title, 'docs_dir': str(docs), 'site_dir': str(out), 'use_directory_urls': False,
        'theme': {'name': 'material', 'font': False, 'language': 'en',
                  'features': ['navigation.sections', 'navigation.top', 'navigation.footer', 'navigation.tracking',
                               'toc.follow', 'search.suggest', 'search.highlight', 'content.code.copy'],
                  'palette': [scheme('light', 'default', 'material/weather-night', 'dark'),
                              scheme('dark', 'slate', 'material/weather-sunny', 'light')]},
        'plugins': ['search', {'mkdocs-jupyter': {'include': ['*.ipynb'], 'cache': False, 'no_prompt': True, 'toc_depth': 3, 'ignore_h1_titles': True,
                                                  'remove_tag_config': {'remove_input_tags': ['remove_input']}}}],
        'hooks': [str(ASSETS/'hooks.py')],
        'extra_css': ['assets/extra.css'],
        'extra': {'generator': False},
        'nav': _nav(pgs),
    }

def _safe_out(out:Path):
    "Never replace the repository, its notebooks, or a folder holding them"
    o = out.resolve()
    if o == ROOT or o in ROOT.parents or o == NBS or NBS.is_relative_to(o): raise SystemExit(f'{out}: refusing to replace this folder')

def build(out=ROOT/'_docs', force=False, quiet=False)->Path:
    "Write the site to `out` (refuses a non-empty folder unless `force`); returns it"
    t0, out = time.monotonic(), Path(out).resolve()
    _safe_out(out)
    if out.exists() and any(out.iterdir()):
        if not force: raise SystemExit(f"{out} is not empty: pass --force to replace it")
        shutil.rmtree(out)
    pgs = pages()
    with tempfile.TemporaryDirectory(prefix='mess-docs-') as tmp, working_directory(ROOT):
        docs = Path(tmp)/'docs'
        site = Site(pgs)
        nbs = [process(pg, site) for pg in pgs]
        site.anchors = {pg.url: anchors(nb) for pg, nb in zip(pgs, nbs)}
        for pg, nb in zip(pgs, nbs):
            relink(nb, pg, site)
            dest = docs/(pg.url.removesuffix('.html') + '.ipynb')
            dest.parent.mkdir(parents=True, exist_ok=True)
            write_nb(nb, dest)
        for rel in sorted(site.files): (docs/rel).parent.mkdir(parents=True, exist_ok=True); shutil.copy2(NBS/rel, docs/rel)
        (docs/'assets').mkdir(exist_ok=True); shutil.copy2(ASSETS/'extra.css', docs/'assets'/'extra.css')
        cfg = Path(tmp)/'mkdocs.yml'
        cfg.write_text(yaml.safe_dump(mkdocs_config(pgs, docs, out), sort_keys=False, allow_unicode=True), encoding='utf-8')
        t1 = time.monotonic()
        env = dict(os.environ, NO_MKDOCS_2_WARNING='1', JUPYTER_PLATFORM_DIRS='1')
        r = subprocess.run([sys.executable, '-m', 'mkdocs', 'build', '-f', str(cfg)], cwd=tmp, env=env, capture_output=True, text=True)
        if r.returncode: raise SystemExit(f'mkdocs build failed:\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}')
        if not quiet:
            for l in r.stderr.splitlines():
                if l.startswith(('WARNING', 'ERROR')): print(l)
    if not quiet: print(f"wrote {len(pgs)} pages to {out} (nbdev processing {t1 - t0:.0f} s, mkdocs {time.monotonic() - t1:.0f} s)")
    return out

@call_parse
def main(out:str=str(ROOT/'_docs'), # Output folder
         force:bool=False,          # Replace a non-empty output folder
        ):
    "Build the documentation site from the notebooks"
    build(out, force)
