"Draw nbs/images/mess_overview.png: a backbone with early-exit heads and the confidence test (used by README / index)."
from pathlib import Path
import matplotlib; matplotlib.use('Agg')
import matplotlib.pyplot as plt
from matplotlib.patches import FancyBboxPatch, FancyArrowPatch

def box(ax, x, y, w, h, txt, fc, fs=9):
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle='round,pad=0.02,rounding_size=0.08', fc=fc, ec='k', lw=1))
    ax.text(x + w/2, y + h/2, txt, ha='center', va='center', fontsize=fs)

def arrow(ax, a, b, **kw):
    ax.add_patch(FancyArrowPatch(a, b, arrowstyle='-|>', mutation_scale=12, lw=1.2, color=kw.get('c', 'k'), ls=kw.get('ls', '-')))

fig, ax = plt.subplots(figsize=(10, 3.6)); ax.set_xlim(0, 10.4); ax.set_ylim(0, 3.6); ax.axis('off')
box(ax, 0.05, 1.9, 0.8, 0.7, 'image', '#eeeeee')
xs = [1.2, 2.9, 4.6, 6.3]
for i, x in enumerate(xs):
    box(ax, x, 1.9, 1.2, 0.7, f'segment {i+1}\n(res. block)', '#cfe2f3')
    arrow(ax, (x - (0.35 if i == 0 else 0.5), 2.25), (x, 2.25))
box(ax, 8.0, 1.9, 1.1, 0.7, 'final head\n(DeepLabV3)', '#f4cccc')
arrow(ax, (7.5, 2.25), (8.0, 2.25))
box(ax, 9.35, 1.9, 0.95, 0.7, 'final\nexit', '#f4cccc')
arrow(ax, (9.1, 2.25), (9.35, 2.25))
for i, (x, nm) in enumerate(zip(xs[:3], ['FCN', 'CRM+FCN', 'CRM+2 blocks\n+RDI+ASPP'])):
    arrow(ax, (x + 1.2, 2.0), (x + 1.2, 1.35))
    box(ax, x + 0.6, 0.7, 1.2, 0.65, f'exit {i+1}\n{nm}', '#d9ead3', fs=8)
    ax.text(x + 1.2, 0.35, 'confident?\n-> answer', ha='center', va='center', fontsize=7.5, color='#38761d')
ax.text(5.2, 3.35, 'MESS: early-exit heads along a segmentation backbone', ha='center', fontsize=11, weight='bold')
ax.text(5.2, 2.95, 'stage 1: backbone + one sampled exit per step  |  stage 2: frozen backbone, many heads (CE + PFD)  |  '
        'search: exits, heads, thresholds', ha='center', fontsize=8, color='#444444')
out = Path(__file__).resolve().parents[1]/'nbs'/'images'/'mess_overview.png'
fig.savefig(out, dpi=110, bbox_inches='tight'); print(out)
