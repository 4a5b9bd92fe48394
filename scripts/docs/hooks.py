"""mkdocs hooks of the documentation site (scripts/build_docs.py).

Notebook pages load nothing from the internet: mkdocs-jupyter's notebook template writes a MathJax loader (an
empty `<script src="">` here, since no MathJax URL is given, plus its configuration) and nbconvert's Mermaid loader
(a module script that imports Mermaid from a CDN when a page has a diagram); both are removed before the search
index and the theme see the page. A page that still names a remote script, stylesheet, frame or image fails the
build.

The page's table of contents is made from the headings of the rendered page: mkdocs-jupyter makes it from a
markdown copy of the notebook with inline code removed, so a heading such as "... `DataLoader`s" got an entry
whose link matched no heading. Repeated heading ids get a suffix (`-1`, `-2`, ...), so every entry leads somewhere.

The copy buttons of code cells (a hidden copy of the cell's code and a "Copied!" notice) are kept out of the
search index (material's `data-search-exclude`), so a result shows a cell's code once.
"""
import re
from collections import Counter
from mkdocs.structure.toc import get_toc

_DROP = [re.compile(r'<script src="">\s*</script>'),
         re.compile(r'<script type="text/x-mathjax-config">.*?</script>', re.S),
         re.compile(r'<script type="module">(?:(?!</script>).)*?cdnjs\.cloudflare\.com/ajax/libs/mermaid(?:(?!</script>).)*?</script>', re.S)]
_REMOTE = re.compile(r'<(?:script|link|img|iframe|source|video|audio)\b[^>]*\b(?:src|href)="(?:https?:)?//[^"]*"|'
                     r'@import\s+url\(\s*["\']?(?:https?:)?//|import\(\s*["\'](?:https?:)?//', re.I)
_HEADING = re.compile(r'<h([1-6])\b([^>]*)\bid="([^"]+)"([^>]*)>(.*?)</h\1>', re.S)
_ANCHOR = re.compile(r'<a class="anchor-link"[^>]*>.*?</a>', re.S)
_COPY = re.compile(r'<div (id="cell-\d+" )?class="(zeroclipboard-container|clipboard-copy-txt)"')

def _unique_ids(html):
    "Heading ids made unique: the second 'x' becomes 'x-1' (with its own anchor link)"
    seen = Counter()
    def _f(m):
        lvl, pre, hid, post, body = m.groups()
        n = seen[hid]; seen[hid] += 1
        if not n: return m.group(0)
        new = f'{hid}-{n}'
        body = body.replace(f'href="#{hid}"', f'href="#{new}"')
        return f'<h{lvl}{pre}id="{new}"{post}>{body}</h{lvl}>'
    return _HEADING.sub(_f, html)

def toc_tokens(html, depth=3):
    "Nested table-of-contents tokens (as Python-Markdown's toc makes them) from the headings of `html`"
    root, stack = [], []
    for m in _HEADING.finditer(html):
        level = int(m[1])
        if level > depth: continue
        name = re.sub(r'<[^>]+>', '', _ANCHOR.sub('', m[5])).strip()
        tok = dict(level=level, id=m[3], name=name, children=[])
        while stack and stack[-1]['level'] >= level: stack.pop()
        (stack[-1]['children'] if stack else root).append(tok)
        stack.append(tok)
    return root

def on_page_content(html, page, config, files):
    for rx in _DROP: html = rx.sub('', html)
    if (m := _REMOTE.search(html)): raise ValueError(f'{page.file.src_path} would load from the internet: {m.group(0)[:200]}')
    if page.file.src_path.endswith('.ipynb'):
        html = _unique_ids(html)
        html = _COPY.sub(lambda m: m.group(0) + ' data-search-exclude', html)
        nbp = config.plugins.get('mkdocs-jupyter')
        page.toc = get_toc(toc_tokens(html, nbp.config['toc_depth'] if nbp else 3))
    return html
