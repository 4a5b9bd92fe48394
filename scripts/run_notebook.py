"""Execute notebooks in place for committing with outputs, skipping `#| slow` and `#| eval: false` cells
(those run only under `nbdev-test --flags slow` or never).  Usage: python scripts/run_notebook.py nbs/02_train.ipynb ..."""
import os, sys, re
from pathlib import Path
import nbformat
from nbconvert.preprocessors import ExecutePreprocessor
from traitlets.config import Config

SKIP = re.compile(r'^\s*#\|\s*(slow\b|eval:\s*false)', re.M)

class SkipSlow(ExecutePreprocessor):
    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type == 'code' and SKIP.search(cell.source):
            cell.outputs, cell.execution_count = [], None
            return cell, resources
        return super().preprocess_cell(cell, resources, index)

# nbclient, like voila, sometimes never wakes for a reply the kernel sent (see mess_fast.explore): its kernel client re-checks
RECHECK = Config({'KernelManager': {'client_class': 'mess_fast.explore.RecheckingKernelClient'}})
os.environ.pop('MPLBACKEND', None)   # the kernel's own inline backend: figures are kept as outputs (with Agg they are lost)
for fn in sys.argv[1:]:
    p = Path(fn).resolve()
    nb = nbformat.read(p, as_version=4)
    SkipSlow(timeout=1800, kernel_name='python3', config=RECHECK).preprocess(nb, {'metadata': {'path': str(p.parent)}})
    nbformat.write(nb, p)
    print(f"executed {fn}")
