"""MESS in ONNX Runtime against the plain model in ONNX Runtime, float32 and int8, searched exactly on the runtime it
deploys to (`mess_fast.onnx_search`).

The network: the trust benchmark's ResNet-18 MESS (results/mess_r18_0016E5.pth: trained on sequence 0016E5 only, 120x160,
28 heads at 7 positions). Frames of sequences it never trained on:
- the int8 quantizer calibrates on 38 frames of the training sequence (every 8th: no labels used),
- the search chooses on one sequence (default 0001TP: its 62 frames here), with a cache and a latency profile built by
  the very graphs it deploys (float32 or int8),
- everything reported is measured on another (default 0006R0, 101 frames): mIoU against ground truth (exact: the cache of the
  deployed graphs on those frames, checked against the deployment's own `evaluate`), latency per image at batch size
  1 with 2 threads, deployments timed in interleaved rounds (the order rotating), medians over the rounds.

Reported per runtime (torch eager, ORT float32, ORT int8): the plain model (the single-exit network: the final exit
alone) and the paper's three targets picked on the search sequence; speed-ups against the plain model in the same runtime and
against plain ORT float32; the quantization's mIoU cost and speed-up per exit (each exit alone, budgeted); the
search's predicted latency (its ORT profile) against the measured one.

Goals (issue 27): int8 exits >= 1.8x faster than float32 ORT at <= 0.5 pp mIoU cost per exit; MESS in ORT int8 >= 2x
faster than the plain model in ORT float32 at <= 1 pp drop (the issue's case: LR-ASPP-MobileNetV3, trained by
train_shift_model.py; the plain model is the MESS network's own final exit, the same architecture as LR-ASPP).

torch runs with OMP_WAIT_POLICY=PASSIVE (set before torch is imported). Writes results/int8.json and results/int8.txt.
Run:  python bench/bench_int8.py   (about 10 min here)
      python bench/bench_int8.py --ckpt bench/results/mess_lraspp_0016E5.pth --stem int8_lraspp --rounds 7   (LR-ASPP: train_shift_model.py)
      python bench/bench_int8.py --search-seq 0006R0 --eval-seq 0001TP --stem int8_eval0001TP   (the roles swapped)
"""
import os
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
import json, time, datetime, platform, tempfile
from pathlib import Path
import numpy as np, torch, onnxruntime as ort
from fastcore.script import call_parse
import mess_fast
from mess_fast.core import FINAL
from mess_fast.data import camvid_path, seg_source, sequence_of
from mess_fast.imaging import prepare_image
from mess_fast.model import MESSNet
from mess_fast.cache import ExitConfig
from mess_fast.search import search, TARGETS
from mess_fast.export import export_onnx
from mess_fast.runtime import OnnxEarlyExitRunner
from mess_fast.onnx_search import build_onnx_cache, profile_onnx, select_onnx
from common import RESULTS

CKPT = RESULTS/'mess_r18_0016E5.pth'

def pairs_by_sequence():
    src = seg_source(camvid_path(), valid='val')     # the shared CamVid has no test split
    by = {}
    for p in sorted(list(src.train) + list(src.valid), key=lambda p: Path(p[0]).name):
        by.setdefault(sequence_of(p[0]), []).append(p)
    return by

def torch_latency(pred, xs):
    "Mean ms per image of `pred.predict_batch` over the prepared frames `xs` (batch size 1)"
    t = time.perf_counter()
    with torch.no_grad():
        for x in xs: pred.predict_batch(x)
    return (time.perf_counter() - t) / len(xs) * 1e3

@call_parse
def main(ckpt:str=str(CKPT),      # The MESS network (trained on 0016E5: bench_train_shift.py, train_shift_model.py)
         search_seq:str='0001TP', # Sequence the search chooses on
         eval_seq:str='0006R0',   # Sequence everything is reported on
         stem:str='int8',         # Results file stem: results/<stem>.json and .txt
         rounds:int=3,      # Interleaved timing rounds
         n_time:int=60,     # Evaluation frames timed per round (the first of the evaluation sequence); mIoU uses all of them
         threads:int=2,     # Threads of ONNX Runtime and torch
         reps:int=20,       # Profile repetitions
        ):
    torch.set_num_threads(threads)
    by = pairs_by_sequence()
    qcal, spairs, epairs = [a for a, _ in by['0016E5'][::8]], by[search_seq], by[eval_seq]
    net = MESSNet.load(ckpt).eval()
    size = tuple(net.meta['input']['size'])
    out, tmp = dict(frames=dict(quantizer=f"0016E5 every 8th ({len(qcal)})", search=f"{search_seq} ({len(spairs)})",
                               evaluation=f"{eval_seq} ({len(epairs)})"), size=list(size), threads=threads), Path(tempfile.mkdtemp())
    t0 = time.time()
    full = {'ort_fp32': export_onnx(net, tmp/'f32', all_exits=True),
            'ort_int8': export_onnx(net, tmp/'i8', all_exits=True, quantize='int8', calib=qcal)}
    out['export_s'] = round(time.time() - t0, 1); print(f"exported in {out['export_s']} s", flush=True)
    caches, evals, profs, results = {}, {}, {}, {}
    x0 = epairs[0][0]
    for rt, d in full.items():
        caches[rt] = build_onnx_cache(d, spairs, progress=False)
        evals[rt] = build_onnx_cache(d, epairs, progress=False)
        profs[rt] = profile_onnx(OnnxEarlyExitRunner(d, threads=threads), x=x0, reps=reps, progress=False)
        results[rt] = search(caches[rt], profs[rt], progress=False)
        print(f"{rt}: caches, profile and search done ({results[rt]})", flush=True)
    # per exit: the quantization's mIoU cost (evaluation frames) and speed-up (profiled, the exit alone)
    per_exit = []
    for k in evals['ort_fp32'].keys:
        cfg = ExitConfig(budget=k)
        m32, m8 = evals['ort_fp32'].evaluate(cfg)['miou'], evals['ort_int8'].evaluate(cfg)['miou']
        l32, l8 = profs['ort_fp32'].exit_latency(k), profs['ort_int8'].exit_latency(k)
        per_exit.append(dict(exit=k, miou_fp32=m32, miou_int8=m8, cost_pp=(m32 - m8) * 100, ms_fp32=l32, ms_int8=l8,
                             speedup=l32 / l8))
    out['per_exit'] = per_exit
    # deployments: plain (final alone) and the paper's targets, picked on the search sequence by each runtime's own search
    deps = {}
    for rt in full:
        deps[(rt, 'plain')] = ExitConfig(budget=FINAL)
        for key in TARGETS:
            try: deps[(rt, key)] = results[rt].target(key)
            except ValueError as e: print(f"{rt} {key}: {e}")
    runners = {}
    for (rt, key), cfg in deps.items():
        d = select_onnx(full[rt], cfg, tmp/f"dep_{rt}_{key}")
        runners[(rt, key)] = OnnxEarlyExitRunner(d, threads=threads)
    # torch eager: the plain network and the float32 picks (the torch network is the float32 one)
    inp = net.meta['input']
    xs = [torch.from_numpy(prepare_image(a, size, inp['mean'], inp['std']))[None] for a, _ in epairs[:n_time]]
    base = caches['ort_fp32'].base_policy()   # the exported policy's settings (edge correction, confidence kind)
    tpreds = {('torch', key): deps[('ort_fp32', key)].predictor(net, base)
              for key in ['plain'] + [k for k in TARGETS if ('ort_fp32', k) in deps]}
    lat = {k: [] for k in list(runners) + list(tpreds)}
    order = list(lat)
    for r in range(rounds):
        for name in order[r % len(order):] + order[:r % len(order)]:
            if name in runners: lat[name].append(runners[name].evaluate(epairs[:n_time], warmup=2)['latency_ms'])
            else: torch_latency(tpreds[name], xs[:2]); lat[name].append(torch_latency(tpreds[name], xs))
        print(f"round {r + 1}/{rounds} timed", flush=True)
    rows = []
    plain32 = float(np.median(lat[('ort_fp32', 'plain')]))
    for name in order:
        rt, key = name
        cfg = deps[('ort_fp32' if rt == 'torch' else rt, key)]
        ev = evals['ort_fp32' if rt == 'torch' else rt]
        e = ev.evaluate(cfg, list(results['ort_fp32' if rt == 'torch' else rt].costs.values()))
        if rt != 'torch':       # the deployment answers exactly as the cache of its graphs says
            got = runners[name].evaluate(epairs, warmup=0)
            assert got['exits'] == e['exits'] and (got['cm'] == e['cm']).all(), name
        ms = float(np.median(lat[name]))
        plain_same = float(np.median(lat[(rt, 'plain')]))
        rows.append(dict(runtime=rt, target=key, config=cfg.name, miou=e['miou'],
                         drop_pp=(ev.evaluate(ExitConfig(budget=FINAL))['miou'] - e['miou']) * 100,
                         chosen_drop_pp=results['ort_fp32' if rt == 'torch' else rt].evaluate(cfg)['drop_pp'],
                         hist=e['hist'], measured_ms=ms, rounds_ms=[round(v, 3) for v in lat[name]],
                         predicted_ms=e.get('latency') if rt != 'torch' else None,
                         speedup_vs_plain_same_runtime=plain_same / ms, speedup_vs_plain_ort_fp32=plain32 / ms))
    out['deployments'] = rows
    out['meta'] = dict(mess_fast=mess_fast.__version__, torch=torch.__version__, onnxruntime=ort.__version__,
                       cpu=platform.processor() or platform.machine(), date=datetime.date.today().isoformat(),
                       network=Path(ckpt).name, arch=net.config['arch'], rounds=rounds, timed_frames=n_time, quantization=json.loads(
                           (full['ort_int8']/'manifest.json').read_text())['quantization'] | dict(graphs='(per graph: omitted)'))
    (RESULTS/f'{stem}.json').write_text(json.dumps(out, indent=1, default=str))
    lines = [f"{net.config['arch']} MESS (trained on 0016E5; {len(net.heads)} heads), {size[0]}x{size[1]}, searched on {search_seq} ({len(spairs)} frames), "
             f"evaluated on {eval_seq} ({len(epairs)} frames), "
             f"batch 1, {threads} threads, {rounds} interleaved rounds", "",
             "Per exit (alone): mIoU float32 -> int8 (cost pp), profiled ms float32 -> int8 (speed-up)"]
    for p in per_exit:
        lines.append(f"  {p['exit']:22} {p['miou_fp32']:.4f} -> {p['miou_int8']:.4f} ({p['cost_pp']:+.2f})   "
                     f"{p['ms_fp32']:6.2f} -> {p['ms_int8']:6.2f} ms ({p['speedup']:.2f}x)")
    lines += ["", f"Deployments (mIoU on {eval_seq}; drop vs the plain model of the same runtime; measured ms; speed-ups)"]
    for r in rows:
        pred = f"{r['predicted_ms']:.2f}" if r['predicted_ms'] is not None else '-'
        lines.append(f"  {r['runtime']:8} {r['target']:6} mIoU {r['miou']:.4f} drop {r['drop_pp']:+.2f} pp  "
                     f"{r['measured_ms']:7.2f} ms (predicted {pred})  x{r['speedup_vs_plain_same_runtime']:.2f} same rt, "
                     f"x{r['speedup_vs_plain_ort_fp32']:.2f} vs ORT fp32 plain   {r['config']}")
    (RESULTS/f'{stem}.txt').write_text('\n'.join(lines) + '\n')
    print('\n'.join(lines))
