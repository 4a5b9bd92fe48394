"""ONNX Runtime against torch eager on the trained bench network (see common.py: ResNet-18, CamVid 120x160, the held-out
sequence 0006R0): batch size 1, the same number of threads, one process, interleaved rounds.

1. The deployments: the search's picks (`results/search.json` of bench_search.py: the paper's three targets) or one
   configuration given with --config; every exit they use, budgeted (the truncated network alone); the final exit.
   Each is built as `EarlyExitPredictor` (torch eager) and exported with `export_onnx` for `OnnxEarlyExitRunner`.
2. Parity on every held-out frame (calibration and evaluation halves, batches of 8): the same exit taken, the labels of
   the images that take the same exit, the image confidences, the mIoU (each side with its own confusion / mIoU code).
   `OnnxEarlyExitRunner.evaluate` on the evaluation half's image and mask files too (its own image preparation).
3. Latency on the evaluation half at batch size 1: per round, every deployment is timed in torch and in ONNX Runtime
   (which goes first alternates between rounds) over the same prepared frames after a warm-up; the mean per image of
   each round, and per round the ratio torch / ONNX Runtime. Reported: medians over the rounds and the ratios' range.
   Goal: ONNX Runtime >= 1.5x faster at every exit, and its early exits saving the same fraction of time as in torch.

torch runs with OMP_WAIT_POLICY=PASSIVE (set here before torch is imported unless already set): libgomp's default
spin-waiting makes torch 40-100x slower on a CPU shared with other jobs. ONNX Runtime runs with spin-waiting off.

Writes results/onnx.json and results/onnx.txt (no local paths).
Run:  python bench/bench_onnx.py --ckpt path/to/mess_r18.pth   (default results/mess_r18.pth; about 10 min here)
"""
import os
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
import json, time, datetime, platform, shutil, tempfile
from pathlib import Path
import numpy as np, torch, onnxruntime as ort
from fastcore.script import call_parse
import mess_fast
from mess_fast.loaders import input_meta, labelled_dl
from mess_fast.model import MESSNet
from mess_fast.core import FINAL, confusion, miou
from mess_fast.policy import ExitPolicy
from mess_fast.cache import ExitConfig
from mess_fast.export import export_onnx
from mess_fast.runtime import OnnxEarlyExitRunner
from mess_fast.core import np_confusion, np_miou
from common import HERE, RESULTS, CKPT, camvid_loaders, camvid_split

def shown(p):
    "A path for reports: relative to the repository when inside it, else the file name only (never a machine path)"
    p = Path(p).resolve()
    return str(p.relative_to(HERE.parent)) if p.is_relative_to(HERE.parent) else p.name

def parse_config(s:str)->ExitConfig:
    "'2:fcn-b0=0.9/0.6,4:aspp-crm-b0=0.9/0.8' -> ExitConfig (early exits in depth order, then the final exit)"
    ex, tp, ti = [], [], []
    for part in s.split(','):
        try: k, th = part.strip().split('='); p, i = th.split('/'); ex.append(k); tp.append(float(p)); ti.append(float(i))
        except ValueError: raise SystemExit(f"--config: expected 'key=th_pix/th_img,...', got {part!r}") from None
    return ExitConfig(ex, tp, ti)

def search_picks(path)->tuple:
    "`({target: ExitConfig}, base ExitPolicy)` from a SearchResult JSON"
    d = json.loads(Path(path).read_text())
    cfgs = {c.name: c for c in (ExitConfig.from_dict(x) for v in d['fronts'].values() for x in v)}
    return {r['target']: cfgs[r['name']] for r in d['targets']['latency']}, ExitPolicy(**d['policy'])

def timed(f, xs, warmup):
    "Per-image seconds of f(x) over xs, after `warmup` untimed calls"
    for x in xs[:warmup]: f(x)
    ts = []
    for x in xs:
        t = time.perf_counter(); f(x); ts.append(time.perf_counter() - t)
    return ts

def latency(res, deps, eval_dl, rounds, warmup, say):
    "Interleaved rounds at batch size 1 on the evaluation frames: medians, ratios, shares of the final exit's time, the goal"
    xs = [x[i:i+1].as_subclass(torch.Tensor).clone() for x, _ in eval_dl for i in range(len(x))]
    xn = [x.numpy().copy() for x in xs]
    lat = {name: dict(torch=[], ort=[]) for name in deps}
    say(f"\nLatency on the {len(xs)} evaluation frames, batch size 1, {rounds} interleaved rounds:")
    for r in range(rounds):
        for name, d in deps.items():
            order = [('torch', d['torch'].predict_batch, xs), ('ort', d['ort'].predict_batch, xn)]
            for rt, f, data in (order if r % 2 == 0 else order[::-1]):
                with torch.no_grad(): lat[name][rt].append(float(np.mean(timed(f, data, warmup))) * 1e3)
        say(f"  round {r + 1}: " + ', '.join(f"{name.split(' (')[0]} {np.mean(lat[name]['torch'][-1]):.1f}/{lat[name]['ort'][-1]:.1f} ms" for name in deps))
    res['loadavg_end'] = os.getloadavg()
    fin = f"budget {FINAL}"
    rows = {}
    for name, d in deps.items():
        t, o = np.array(lat[name]['torch']), np.array(lat[name]['ort'])
        ratio = t / o
        rows[name] = dict(kind=d['kind'], targets=d.get('targets'), torch_ms=float(np.median(t)), ort_ms=float(np.median(o)),
                          ratio=float(np.median(ratio)), ratio_min=float(ratio.min()), ratio_max=float(ratio.max()),
                          torch_rounds=t.tolist(), ort_rounds=o.tolist(), hist=res['parity'][name]['hist_ort'])
    for name, row in rows.items():   # share of the final exit's time, in each runtime (same rounds)
        ft, fo = np.array(lat[fin]['torch']), np.array(lat[fin]['ort'])
        row['vs_final_torch'] = float(np.median(np.array(lat[name]['torch']) / ft))
        row['vs_final_ort'] = float(np.median(np.array(lat[name]['ort']) / fo))
    res['latency'] = rows
    budg = [r for r in rows.values() if r['kind'] == 'budgeted']
    res['goal'] = dict(target_ratio=1.5, min_budgeted_ratio=min(r['ratio'] for r in budg),
                       every_exit_met=all(r['ratio'] >= 1.5 for r in budg),
                       exits_below=[n for n, r in rows.items() if r['kind'] == 'budgeted' and r['ratio'] < 1.5])

    say("\n| deployment | torch eager (ms/image) | ONNX Runtime (ms/image) | speed-up (range over rounds) | time vs the final exit: torch / ORT |")
    say("|---|---|---|---|---|")
    for name, r in rows.items():
        label = name + (f" ({', '.join(r['targets'])})" if r['targets'] else '')
        say(f"| {label} | {r['torch_ms']:.1f} | {r['ort_ms']:.1f} | {r['ratio']:.2f}x ({r['ratio_min']:.2f}-{r['ratio_max']:.2f}) | "
            f"{r['vs_final_torch']:.2f} / {r['vs_final_ort']:.2f} |")
    g = res['goal']
    say(f"\nGoal >= 1.5x at every exit (budgeted): {'met' if g['every_exit_met'] else 'not met at ' + ', '.join(g['exits_below'])} "
        f"(lowest {g['min_budgeted_ratio']:.2f}x); load average {res['loadavg_start'][0]:.1f} at the start, {res['loadavg_end'][0]:.1f} at the end")

@call_parse
def main(ckpt:str=str(CKPT),   # The trained network (a MESSNet checkpoint holding the picks' exits)
         search:str=None,      # SearchResult JSON; default results/search.json when present
         config:str=None,      # Instead of a search: one configuration 'key=th_pix/th_img,...' (early exits, then the final exit)
         threads:int=2,        # torch threads and ONNX Runtime intra-op threads
         rounds:int=5,         # Interleaved measurement rounds (0: parity only)
         warmup:int=3,         # Untimed images before each timed pass
         max_frames:int=None,  # Cap on the frames of each held-out half (a quick trial); all by default
         out:str=str(RESULTS/'onnx.json'), # Result JSON (a .txt report is written beside it)
         overwrite:bool=False, # Replace earlier result files
        ):
    "Benchmark ONNX Runtime against torch eager: parity and latency per exit and per pick"
    torch.set_num_threads(threads)
    ckpt, out = Path(ckpt), Path(out)
    if not ckpt.is_file(): raise SystemExit(f"{ckpt.name}: no such checkpoint; pass --ckpt (made by bench/bench_train.py)")
    if not overwrite and (ex := [o.name for o in (out, out.with_suffix('.txt')) if o.exists()]): raise SystemExit(f"{ex} exist: pass --overwrite")
    report = []
    def say(*a):
        s = ' '.join(str(o) for o in a); print(s, flush=True); report.append(s)

    net = MESSNet.load(ckpt).eval()
    dls, _, _ = camvid_loaders()
    net.meta.setdefault('input', input_meta(dls))
    _, calib, evalp = camvid_split()
    calib, evalp = list(calib)[:max_frames], list(evalp)[:max_frames]
    eval_dl = labelled_dl(dls, evalp, bs=8)
    if config is not None: picks, base, source = {'configuration': parse_config(config)}, ExitPolicy(), 'config'
    else:
        sp = Path(search) if search else RESULTS/'search.json'
        if not sp.is_file(): raise SystemExit(f"{shown(sp)}: no search result; run bench/bench_search.py, pass --search, or --config")
        (picks, base), source = search_picks(sp), shown(sp)
    dyn = {}
    for t, c in picks.items():
        if c.budget is None and c.exits: dyn.setdefault(c.name, (c, []))[1].append(t)
    used = sorted({k for c, _ in dyn.values() for k in c.exits} | {c.budget for c in picks.values() if c.budget not in (None, FINAL)},
                  key=net.exit_pos) + [FINAL]
    if (miss := [k for k in used if k != FINAL and k not in net.heads]): raise SystemExit(f"{ckpt.name} has no exits {miss}")

    say(f"network: {ckpt.name} ({net.config['arch']}, output stride {net.config['output_stride']}); picks from {source}; "
        f"{threads} threads, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, onnxruntime {ort.__version__}, torch {torch.__version__}")
    res = dict(date=datetime.datetime.now().isoformat(timespec='seconds'), mess_fast=mess_fast.__version__, torch=torch.__version__,
               onnxruntime=ort.__version__, numpy=np.__version__, python=platform.python_version(), threads=threads,
               omp_wait_policy=os.environ.get('OMP_WAIT_POLICY'), ort_settings=dict(optimization='all', spin=False, execution='sequential'),
               cpu=platform.processor() or platform.machine(), cpus=os.cpu_count(), loadavg_start=os.getloadavg(),
               net=net.full_config(), ckpt=ckpt.name, picks_from=source, rounds=rounds, warmup=warmup, size=net.meta['input']['size'])

    # deployments: torch predictor and exported runner
    deps, tmp = {}, Path(tempfile.mkdtemp(prefix='bench_onnx_'))
    for k in used: deps[f"budget {k}"] = dict(kind='budgeted', exit=k, cfg=ExitConfig(budget=k), targets=[t for t, c in picks.items() if c.budget == k])
    for name, (c, targets) in dyn.items(): deps[name] = dict(kind='dynamic', targets=targets, cfg=c)
    for i, (name, d) in enumerate(deps.items()):
        c = d['cfg']
        d['torch'] = c.predictor(net.pruned([c.budget] if c.budget else list(c.exits)), base)
        t = time.perf_counter(); folder = export_onnx(d['torch'], tmp/f"d{i}")
        d['export_s'] = time.perf_counter() - t
        d['ort'] = OnnxEarlyExitRunner(folder, threads=threads)
        d['graphs'] = len(d['ort'].manifest['files'])
        d['mb'] = sum(f['bytes'] for f in d['ort'].manifest['files'].values()) / 2**20
    say(f"exported {len(deps)} deployments in {sum(d['export_s'] for d in deps.values()):.0f} s: "
        + ', '.join(f"{n} ({d['graphs']} graphs, {d['mb']:.0f} MB)" for n, d in deps.items()))

    # parity on every held-out frame, batches of 8
    held = labelled_dl(dls, list(calib) + list(evalp), bs=8)
    batches = [(x.as_subclass(torch.Tensor), y.as_subclass(torch.Tensor)) for x, y in held]
    void, n = dls.void_code, net.n_classes
    say(f"\nParity on the {len(held.items)} held-out frames (batches of 8): torch eager vs ONNX Runtime")
    res['parity'] = {}
    for name, d in deps.items():
        cmt, cmo, ext, exo, ct, co, same_px, n_px = torch.zeros(n, n, dtype=torch.long), np.zeros((n, n), np.int64), [], [], [], [], 0, 0
        for x, y in batches:
            rt, ro = d['torch'].predict_batch(x), d['ort'].predict_batch(x.numpy())
            cmt += confusion(rt['masks'], y, n, void); cmo += np_confusion(ro['masks'], y.numpy(), n, void)
            ext += rt['exits']; exo += ro['exits']; ct.append(rt['conf'].numpy()); co.append(ro['conf'])
            s = np.array([a == b for a, b in zip(rt['exits'], ro['exits'])])
            same_px += int((rt['masks'].numpy()[s] == ro['masks'][s]).sum()); n_px += int(s.sum()) * x.shape[-2] * x.shape[-1]
        ct, co = np.concatenate(ct), np.concatenate(co)
        s = np.array([a == b for a, b in zip(ext, exo)])
        p = dict(n=len(ext), same_exit=float(s.mean()), same_label=same_px / max(n_px, 1), conf_equal=bool(np.array_equal(ct[s], co[s], equal_nan=True)),
                 miou_torch=miou(cmt, void), miou_ort=np_miou(cmo, void), hist_torch={k: ext.count(k) for k in dict.fromkeys(ext)},
                 hist_ort={k: exo.count(k) for k in dict.fromkeys(exo)})
        p['miou_diff_pp'] = (p['miou_ort'] - p['miou_torch']) * 100
        res['parity'][name] = p
        say(f"  {name:60s} same exit {p['same_exit']:.2%}, same label {p['same_label']:.4%}, confidences equal {p['conf_equal']}, "
            f"mIoU {p['miou_torch']*100:.2f} vs {p['miou_ort']*100:.2f} ({p['miou_diff_pp']:+.3f} pp)")
    # evaluate from the image and mask files (the runtime's own preparation) vs the torch predictor on its DataLoader
    for name, d in deps.items():
        if d['kind'] != 'dynamic': continue
        et, eo = d['torch'].evaluate(eval_dl), d['ort'].evaluate(evalp)
        res['parity'][name]['evaluate_files'] = dict(same_exit=float(np.mean([a == b for a, b in zip(et['exits'], eo['exits'])])),
                                                     miou_torch=et['miou'], miou_ort=eo['miou'], miou_diff_pp=(eo['miou'] - et['miou']) * 100)
        say(f"  evaluate on the evaluation half's files, {name}: same exit {res['parity'][name]['evaluate_files']['same_exit']:.2%}, "
            f"mIoU diff {res['parity'][name]['evaluate_files']['miou_diff_pp']:+.3f} pp")

    if rounds > 0: latency(res, deps, eval_dl, rounds, warmup, say)
    else: say('\n--rounds 0: no latency measured')
    shutil.rmtree(tmp, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1, default=float))
    out.with_suffix('.txt').write_text('\n'.join(report) + '\n')
    print(f"wrote {shown(out)} and {shown(out.with_suffix('.txt'))}")
