"""Build the documentation site: one HTML page per notebook (API reference, tutorials, the reproduction report), the
README as the home page, a navigation bar on every page, into a folder that `python -m http.server` can serve.

Quarto (what `nbdev-docs` needs) cannot be installed here, so the pages come from nbconvert's HTML exporter, fed
the notebooks as they are committed (with their outputs): nbdev's `#|` directives are stripped, `#| hide` cells
dropped, and nothing is loaded from the internet (no CDN scripts: interactive widgets are replaced by a note).

    python scripts/build_docs.py                 # -> _docs/, then: python -m http.server -d _docs
    python scripts/build_docs.py --out site --force
"""
import re, shutil, html
from pathlib import Path
import nbformat
from nbconvert import HTMLExporter
from fastcore.script import call_parse

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT/'nbs'
SKIP_DIRECTIVES = ('hide', 'default_exp', 'eval: false')

def pages(nbs=NBS)->list:
    "Notebooks in site order: the home page (index), the API notebooks, the tutorials, the reproduction report"
    api = sorted(p for p in nbs.glob('[0-9]*.ipynb'))
    tut = sorted((nbs/'tutorials').glob('*.ipynb')) if (nbs/'tutorials').is_dir() else []
    rep = [nbs/'reproduction.ipynb'] if (nbs/'reproduction.ipynb').exists() else []
    return [nbs/'index.ipynb'] + api + tut + rep

def page_name(nb:Path, nbs=NBS)->str:
    "The HTML file of notebook `nb`: index.html for the home page, else its path with .html (folders kept)"
    rel = nb.relative_to(nbs)
    return 'index.html' if rel.as_posix() == 'index.ipynb' else rel.with_suffix('.html').as_posix()

def title_of(nb)->str:
    for c in nb.cells:
        if c.cell_type == 'markdown' and (m := re.search(r'^#\s+(.+)$', c.source, re.M)): return m.group(1).strip()
    return 'mess_fast'

def _directives(src): return [l[3:].strip() for l in src.splitlines() if l.startswith('#|')]

_QUARTO_LINK = re.compile(r'\[([^\]]+)\]\(([^)\s]+)\)\{([^}]*)\}')

def _plain_links(o):
    "show_doc's `[source](url){target=... style=...}` is Quarto's link syntax: as an HTML link, which any renderer shows"
    md = o.get('data', {}).get('text/markdown')
    if md is None: return o
    text = ''.join(md) if isinstance(md, list) else md
    o['data']['text/markdown'] = _QUARTO_LINK.sub(lambda m: f'<a href="{m[2]}" {html.unescape(m[3])}>{m[1]}</a>', text)
    return o

def clean(nb):
    "Drop hidden cells, strip nbdev directives, replace interactive widget outputs (which need JavaScript from a CDN) by a note"
    cells = []
    for c in nb.cells:
        if c.cell_type == 'code':
            d = _directives(c.source)
            if any(x.split(':')[0].strip() in ('hide',) or x.startswith('default_exp') for x in d): continue
            c.source = '\n'.join(l for l in c.source.splitlines() if not l.startswith('#|')).strip('\n')
            outs = []
            for o in c.get('outputs', []):
                if o.get('output_type') in ('display_data', 'execute_result') and 'application/vnd.jupyter.widget-view+json' in o.get('data', {}):
                    outs.append(nbformat.v4.new_output('display_data', data={'text/html':
                        '<p class="widget-note"><em>An interactive widget appears here when the notebook runs in Jupyter or voila '
                        '(<code>voila nbs/06_widgets.ipynb</code>).</em></p>'}))
                else: outs.append(_plain_links(o))
            c.outputs = outs
            if not c.source and not outs: continue
        cells.append(c)
    nb.cells = cells
    return nb

NAV_CSS = """<style>
.mf-nav{position:sticky;top:0;z-index:10;background:#1f3b57;padding:6px 14px;font:14px sans-serif;display:flex;flex-wrap:wrap;gap:4px 14px}
.mf-nav a{color:#e8eef5;text-decoration:none}.mf-nav a.cur{font-weight:bold;text-decoration:underline}
.mf-nav .grp{color:#9fb3c8}
</style>"""

def nav_html(items, cur):
    "The navigation bar: the pages grouped as home, API, tutorials, report, with relative links from page `cur`"
    depth = cur.count('/')
    up = '../' * depth
    parts, last = [], None
    for name, title, grp in items:
        if grp != last and grp: parts.append(f'<span class="grp">{grp}:</span>')
        last = grp
        parts.append(f'<a href="{up}{name}"{" class=cur" if name == cur else ""}>{html.escape(title)}</a>')
    return f'<nav class="mf-nav">{"".join(parts)}</nav>'

_EXTERNAL = re.compile(r'<(script|link)\b[^>]*(src|href)="https?://[^"]*"[^>]*>(\s*</script>)?', re.I)

def build(out=ROOT/'_docs', force=False)->Path:
    "Write the site to `out` (refuses a non-empty folder unless `force`); returns it"
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not force: raise SystemExit(f"{out} is not empty: pass --force to replace it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    nbs = pages()
    loaded = [(nb, nbformat.read(nb, as_version=4)) for nb in nbs]
    grp = lambda p: '' if p.name == 'index.ipynb' else 'tutorials' if p.parent.name == 'tutorials' else 'report' if p.name == 'reproduction.ipynb' else 'API'
    items = [(page_name(p), title_of(n), grp(p)) for p, n in loaded]
    ex = HTMLExporter(template_name='lab', exclude_input_prompt=True, exclude_output_prompt=True)
    ex.mathjax_url = ''
    for (p, nb), (name, title, _) in zip(loaded, items):
        body, _ = ex.from_notebook_node(clean(nb))
        body = re.sub(r'<script src="">\s*</script>', '', _EXTERNAL.sub('', body))
        body = body.replace('src="nbs/images/', 'src="images/').replace('src="images/', f'src="{"../" * name.count("/")}images/')
        body = re.sub(r'href="(?:\./)?([\w./-]+)\.ipynb(#[^"]*)?"', lambda m: f'href="{m.group(1)}.html{m.group(2) or ""}"', body)
        body = re.sub(r'<title>.*?</title>', f'<title>{html.escape(title)} — mess_fast</title>', body, flags=re.S)
        body = body.replace('<body', NAV_CSS + '<body', 1)
        body = re.sub(r'(<body[^>]*>)', lambda m: m.group(1) + nav_html(items, name), body, count=1)
        dest = out/name; dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(body, encoding='utf-8')
    if (NBS/'images').is_dir(): shutil.copytree(NBS/'images', out/'images')
    print(f"wrote {len(items)} pages to {out}")
    return out

@call_parse
def main(out:str=str(ROOT/'_docs'), # Output folder
         force:bool=False,          # Replace a non-empty output folder
        ):
    "Build the documentation site from the notebooks"
    build(out, force)
