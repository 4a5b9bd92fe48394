"Make README.md from nbs/index.ipynb (nbdev-readme needs Quarto, which cannot be installed here)."
import sys
from pathlib import Path
import nbformat

ROOT = Path(__file__).resolve().parents[1]

def nb2md(nb_path) -> str:
    "Markdown for a notebook: markdown cells as they are, code cells (not hidden) as fenced python with text outputs."
    nb, parts = nbformat.read(nb_path, as_version=4), []
    for c in nb.cells:
        src = c.source.strip('\n')
        if c.cell_type == 'markdown': parts.append(src); continue
        if c.cell_type != 'code': continue
        lines = src.splitlines()
        directives = [l[3:].strip() for l in lines if l.startswith('#|')]
        if any(d.split(':')[0].split()[0] in ('hide', 'export', 'exporti', 'default_exp') for d in directives if d): continue
        code = '\n'.join(l for l in lines if not l.startswith('#|')).strip()
        if code: parts.append(f'```python\n{code}\n```')
        outs = [''.join(o.get('text', '')) or ''.join(o.get('data', {}).get('text/plain', '')) for o in c.get('outputs', [])]
        if (outs := '\n'.join(o for o in outs if o).strip()): parts.append(f'```\n{outs}\n```')
    return '\n\n'.join(parts) + '\n'

def main(check=False):
    md = '<!-- Generated from nbs/index.ipynb by scripts/make_readme.py: edit the notebook, not this file -->\n\n' + nb2md(ROOT/'nbs'/'index.ipynb')
    readme = ROOT/'README.md'
    if check:
        ok = readme.exists() and readme.read_text(encoding='utf-8') == md
        if not ok: print('README.md is out of date: run python scripts/make_readme.py')
        return 0 if ok else 1
    readme.write_text(md, encoding='utf-8'); print(f'wrote {readme}')
    return 0

if __name__ == '__main__': sys.exit(main(check='--check' in sys.argv))
