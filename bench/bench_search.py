"""Deployment search benchmark on the trained network of `bench_train.py` (ResNet-18, output stride 8, 4 head
configurations x 7 positions, CamVid at 120x160, split by sequence: see common.py).

1. Profile the network on this CPU (batch size 1, 2 threads): `results/search_profile.json`.
2. Cache the calibration half and the evaluation half; search every configuration of up to 3 early exits on the
   calibration half, timed: the number of configurations and the seconds (goal: >= 10^6 in <= 60 s).
3. Exactness spot check: for the picks and random configurations, the search's mIoU and exit histogram equal what
   `EarlyExitPredictor.evaluate` measures on the calibration half (confusion matrices bitwise).
4. The paper's three targets, chosen on the calibration half: predicted there, predicted exactly on the evaluation
   half (its cache), and measured on the evaluation half beside the single-exit network in interleaved rounds.
5. The speed-accuracy curve on the evaluation half: the calibration front's points, measured.
6. The latency model: profiled vs measured latency of every budgeted exit and of the measured configurations.

Writes results/search.json (the SearchResult), results/search_bench.json and results/search_bench.txt, and the
profile; no local paths, no progress bars.   Run:  python bench/bench_search.py   (about 15 min here)
"""
import json, time, datetime, platform
from pathlib import Path
import numpy as np, pandas as pd, torch
from fastcore.script import call_parse
from mess_fast.model import MESSNet, FINAL, defaults
from mess_fast.data import input_meta
from mess_fast.profile import profile_net
from mess_fast.search import build_cache, search, ExitConfig, measure, check_picks
from mess_fast.predict import ExitPolicy
from mess_fast.widgets import image_strip
from common import RESULTS, CKPT, camvid_loaders

@call_parse
def main(threads:int=2,        # torch threads
         reps:int=30,          # Timed runs per piece when profiling
         rounds:int=5,         # Interleaved measurement rounds
         curve_points:int=10,  # Front points (drop <= 3 pp on the calibration half) measured on the evaluation half
         n_exact:int=20,       # Random configurations checked against the predictor
         max_exits:int=defaults.max_exits,
         ckpt:str=str(CKPT),   # The trained network
         out:str=str(RESULTS), # Results folder
         overwrite:bool=False, # Replace earlier result files
        ):
    "Run the search benchmark; print tables; write the result files"
    torch.set_num_threads(threads)
    ckpt, out = Path(ckpt), Path(out); out.mkdir(parents=True, exist_ok=True)
    if not ckpt.exists(): raise SystemExit(f"{ckpt.name} is missing: run bench/bench_train.py first")
    outs = [out/f for f in ('search.json', 'search_bench.json', 'search_bench.txt', 'search_profile.json', 'search_cache.pt',
                                'search_strip.npz', 'example_exit.npz')]
    if not overwrite and (ex := [o.name for o in outs if o.exists()]): raise SystemExit(f"{ex} exist in {out.name}/: pass --overwrite")
    report = []
    def say(*a):
        s = ' '.join(str(o) for o in a); print(s); report.append(s)
    pd.set_option('display.width', 200); pd.set_option('display.max_colwidth', 80)
    net = MESSNet.load(ckpt).eval()
    dls, calib_dl, eval_dl = camvid_loaders()
    net.meta.setdefault('input', input_meta(dls))     # networks saved by mess_learner record it; older checkpoints do not
    size = tuple(net.meta['input']['size'])
    say(f"network: {ckpt.name} ({net.config['arch']}, output stride {net.config['output_stride']}, {len(net.heads)} heads); "
        f"{len(calib_dl.items)} calibration + {len(eval_dl.items)} evaluation frames at {size}, {threads} threads")
    res = dict(date=datetime.datetime.now().isoformat(timespec='seconds'), torch=torch.__version__, python=platform.python_version(),
               threads=threads, size=list(size), net=net.full_config(), n_calib=len(calib_dl.items), n_eval=len(eval_dl.items))

    t = time.perf_counter(); prof = profile_net(net, size, reps=reps, progress=False)
    res['profile_seconds'] = time.perf_counter() - t
    t = time.perf_counter(); cache = build_cache(net, calib_dl, progress=False); res['cache_seconds'] = time.perf_counter() - t
    ecache = build_cache(net, eval_dl, progress=False)
    sr = search(cache, prof, max_exits=max_exits, progress=False)
    res['search'] = dict(n_configs=sr.n_configs, seconds=sr.seconds, configs_per_s=sr.n_configs / sr.seconds,
                         front_points={k: len(v) for k, v in sr.fronts.items()})
    say(f"\nsearch: {sr.n_configs:,} configurations in {sr.seconds:.1f} s ({sr.n_configs / sr.seconds / 1e6:.1f} M/s); "
        f"profile {res['profile_seconds']:.0f} s, cache {res['cache_seconds']:.0f} s ({len(cache.keys)} exits x {cache.n_images} images)")

    # exactness: the search's numbers are the predictor's
    rng = np.random.default_rng(0)
    cfgs = list(sr.targets().config) + [sr.fronts['latency'][i] for i in rng.choice(len(sr.fronts['latency']), min(n_exact, len(sr.fronts['latency'])), replace=False)]
    exact = []
    for c in cfgs:
        ev = c.predictor(net, cache.base_policy()).evaluate(calib_dl)
        r = sr.evaluate(c)
        exact.append(dict(config=c.name, hist_equal=r['hist'] == ev['hist'], cm_equal=bool(np.array_equal(r['cm'], ev['cm'].numpy())),
                          miou_diff=abs(r['miou'] - ev['miou'])))
    ex = pd.DataFrame(exact)
    res['exactness'] = dict(n=len(ex), all_hist_equal=bool(ex.hist_equal.all()), all_cm_equal=bool(ex.cm_equal.all()), max_miou_diff=float(ex.miou_diff.max()))
    say(f"exactness vs EarlyExitPredictor.evaluate on the calibration half: {len(ex)} configurations, histograms equal: "
        f"{ex.hist_equal.all()}, confusion matrices bitwise equal: {ex.cm_equal.all()}, max |mIoU diff| {ex.miou_diff.max():.1e}")

    # the paper's targets, measured on the evaluation half
    chk = check_picks(sr, net, eval_dl, ecache, rounds=rounds)
    res['targets'] = json.loads(chk.reset_index().to_json(orient='records'))
    say("\nThe paper's targets: chosen on the calibration half; predicted there, exact prediction on the evaluation half, "
        f"measured on the evaluation half (median of {rounds} interleaved rounds, batch size 1):")
    say(chk[['config', 'calib_drop_pp', 'pred_speedup', 'eval_pred_drop_pp', 'eval_drop_pp', 'eval_latency_ms', 'eval_speedup', 'eval_hist']].round(3).to_string())

    # the curve: calibration front points, measured on the evaluation half
    f = sr.front('latency'); f = f[(f.drop_pp <= 3) & (f.n_exits > 0)]
    pick = f.iloc[np.unique(np.linspace(0, len(f) - 1, min(curve_points, len(f))).round().astype(int))] if len(f) else f
    preds = {FINAL: ExitConfig(budget=FINAL).predictor(net, cache.base_policy())} | {r['name']: r.config.predictor(net, cache.base_policy()) for _, r in pick.iterrows()}
    m = measure(preds, eval_dl, rounds)
    ref = m.loc[FINAL]
    curve = []
    for name, r in pick.set_index('name').iterrows():
        e = ecache.evaluate(r.config)
        curve.append(dict(config=name, n_exits=r.n_exits, calib_drop_pp=r.drop_pp, pred_latency_ms=r.latency_ms, pred_speedup=r.speedup,
                          eval_drop_pp=(ref.miou - m.loc[name, 'miou']) * 100, eval_latency_ms=m.loc[name, 'latency_ms'],
                          eval_speedup=ref.latency_ms / m.loc[name, 'latency_ms'],
                          eval_pred_latency_ms=sr.costs['latency'].mean(r.config.exits, e['hist']),
                          left_early=sum(v for k, v in e['hist'].items() if k != FINAL)))
    cv = pd.DataFrame(curve)
    cv['latency_ratio'] = cv.eval_latency_ms / cv.eval_pred_latency_ms
    res['curve'] = json.loads(cv.to_json(orient='records'))
    say("\nSpeed-accuracy on the evaluation half, for points of the calibration front (drop <= 3 pp there):")
    say(cv.round(3).to_string(index=False))
    ok = cv[(cv.eval_drop_pp <= 0.1)]
    best = ok.sort_values('eval_speedup').iloc[-1] if len(ok) else None
    res['goal_3x_at_0.1pp'] = dict(best_measured_speedup_at_0_1pp=None if best is None else float(best.eval_speedup),
                                   config=None if best is None else best.config, met=bool(best is not None and best.eval_speedup >= 3))
    say("\nGoal >= 3x at <= 0.1 pp drop (evaluation half, measured): " +
        ("no measured point within 0.1 pp" if best is None else f"best {best.eval_speedup:.2f}x ({best.config}, drop {best.eval_drop_pp:.2f} pp)"))

    # latency model: budgeted exits, profiled vs measured
    bud = {k: ExitConfig(budget=k).predictor(net) for k in net.exit_keys}
    mb = measure(bud, eval_dl, rounds)
    lat = pd.DataFrame([dict(exit=k, predicted_ms=prof.exit_latency(k), measured_ms=mb.loc[k, 'latency_ms'],
                             ratio=mb.loc[k, 'latency_ms'] / prof.exit_latency(k), miou=mb.loc[k, 'miou']) for k in net.exit_keys])
    res['latency_model'] = dict(budgeted=json.loads(lat.to_json(orient='records')),
                                ratio_range_budgeted=[float(lat.ratio.min()), float(lat.ratio.max())],
                                ratio_range_dynamic=[float(cv.latency_ratio.min()), float(cv.latency_ratio.max())] if len(cv) else None)
    say("\nLatency model: budgeted exits, profiled vs measured on the evaluation half (batch size 1):")
    say(lat.round(3).to_string(index=False))
    say(f"measured / predicted: budgeted {lat.ratio.min():.2f}-{lat.ratio.max():.2f}"
        + (f", the configurations above {cv.latency_ratio.min():.2f}-{cv.latency_ratio.max():.2f}" if len(cv) else ''))

    # edge correction off: the same search on caches built without it (the ablation)
    pol0 = ExitPolicy(edge=False)
    sr0 = search(build_cache(net, calib_dl, policy=pol0, progress=False), prof, max_exits=max_exits, progress=False)
    ecache0 = build_cache(net, eval_dl, policy=pol0, progress=False)
    rows = []
    for name, r_ in ((True, sr), (False, sr0)):
        for t, row in r_.targets().iterrows():
            e = (ecache if name else ecache0).evaluate(row.config); e0 = ecache.evaluate(ExitConfig(budget=FINAL))
            rows.append(dict(edge=name, target=t, config=row.config.name, calib_drop_pp=row.drop_pp, pred_speedup=row.speedup,
                             eval_pred_drop_pp=(e0['miou'] - e['miou']) * 100,
                             eval_pred_speedup=sr.costs['latency'].final / (sr.costs['latency'].mean(row.config.exits, e['hist']) if row.config.budget is None
                                                                            else sr.costs['latency'].budget[row.config.budget]),
                             left_early_eval=sum(v for k, v in e['hist'].items() if k not in (FINAL,)) if row.config.budget is None else 0))
    ed = pd.DataFrame(rows)
    res['edge_ablation'] = json.loads(ed.to_json(orient='records'))
    say("\nEdge correction on vs off (each searched on its own calibration cache; exact predictions on the evaluation half):")
    say(ed.round(3).to_string(index=False))

    # what the notebooks and widgets show without the network: the cache, a frame strip, one frame's logits at one exit
    cache.save(out/'search_cache.pt', overwrite=overwrite)
    image_strip(net, calib_dl, sr, n=6).save(out/'search_strip.npz', overwrite=overwrite)
    key = sr.targets().config.iloc[1].exits[0] if sr.targets().config.iloc[1].exits else sorted(net.heads)[len(net.heads) // 2]
    xb, yb = next(iter(eval_dl))
    with torch.no_grad(): nat = net.exit_logits(key, net.run_segments(xb[:1], 0, net.exit_pos(key)))
    inp = net.meta['input']
    img = ((xb[0].cpu() * torch.tensor(inp['std'])[:, None, None] + torch.tensor(inp['mean'])[:, None, None]).clamp(0, 1) * 255).round().byte()
    from mess_fast.model import atomic_write
    atomic_write(out/'example_exit.npz', lambda p: np.savez_compressed(open(p, 'wb'), key=np.array(key), stride=np.array(net.exit_stride(key)),
                 image=img.permute(1, 2, 0).numpy(), label=yb[0].numpy().astype(np.uint8), logits=nat[0].numpy(), frame=np.array(eval_dl.items[0][0].name)), overwrite)

    sr.save(out/'search.json', overwrite=overwrite)
    prof.save(out/'search_profile.json', overwrite=overwrite)
    (out/'search_bench.json').write_text(json.dumps(res, indent=1, default=float))
    (out/'search_bench.txt').write_text('\n'.join(report) + '\n')
    print(f"wrote {', '.join(o.name for o in outs)} to {out.name}/")
