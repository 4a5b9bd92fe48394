"""Deployment search benchmark on the trained network of `bench_train.py` (ResNet-18, output stride 8, 4 head
configurations x 7 positions, CamVid at 120x160; trained on sequences 0001TP and 0016E5, 0006R0 held out: common.py).

Nothing is chosen on a frame it is reported on. The held-out sequence is cut in two ways (protocols):
  halves     first 51 frames choose, last 50 report (strict: the second half of the drive looks different),
  reversed   the same halves the other way round,
  alternate  even frames choose, odd frames report (the same scenes, other frames).

1. Latency model: the network is profiled (batch size 1, 2 threads) and every budgeted exit is measured on real frames
   in interleaved rounds, so that both see the same machine; the search uses the median profile.
2. One cache of all 101 held-out frames (the cache of a split is its subset: exact); per protocol the search of every
   configuration of up to 3 early exits on the choosing part, timed (goal: >= 10^6 configurations in <= 60 s).
3. Exactness: for picks and random front points, the search's mIoU and exit histogram equal what
   `EarlyExitPredictor.evaluate` measures (confusion matrices bitwise).
4. The paper's targets, chosen on the choosing part (point: the mean drop; robust: the drop that holds on 90% of bootstrap
   resamples of its images); exact predictions and measured latency (interleaved rounds beside the single-exit network)
   on the reporting part. The goal (>= 3x at <= 0.1 pp) is judged only on these choices.
5. The speed-accuracy curve: front points of the choosing part, measured on the reporting part.
6. Edge correction on vs off (each searched on its own cache).

Writes results/search.json (the primary SearchResult), search_profile.json, search_cache.pt, search_strip.npz,
example_exit.npz (for the notebooks and widgets), search_bench.json and search_bench.txt; no local paths.
Run:  python bench/bench_search.py --overwrite   (about 20 min here; on a quiet machine: the latency model needs it)
"""
import json, time, datetime, platform
from pathlib import Path
import numpy as np, pandas as pd, torch
from fastcore.script import call_parse
from mess_fast.model import MESSNet
from mess_fast.core import FINAL, defaults, atomic_write
from mess_fast.loaders import input_meta, labelled_dl
from mess_fast.profile import profile_net, LatencyProfile
from mess_fast.cache import build_cache, ExitConfig
from mess_fast.search import search, measure
from mess_fast.policy import ExitPolicy
from mess_fast.widgets import image_strip
from common import RESULTS, CKPT, camvid_split, camvid_loaders

PROTOCOLS = {'halves': 'first 51 frames choose, last 50 report', 'reversed': 'last 50 frames choose, first 51 report',
             'alternate': 'even frames choose, odd frames report'}

def protocol_idx(n):
    "Indices (choose, report) of each protocol over `n` frames in frame order (as `split_pairs`)"
    h = (n + 1) // 2; a, b = list(range(h)), list(range(h, n))
    return {'halves': (a, b), 'reversed': (b, a), 'alternate': (list(range(0, n, 2)), list(range(1, n, 2)))}

def median_profile(profs):
    "One `LatencyProfile` whose times are the per-piece medians of `profs` (taken in different rounds)"
    t = profs[0].table.copy()
    for c in ('ms', 'cum_ms'): t[c] = np.median(np.stack([p.table[c].to_numpy(dtype=float) for p in profs]), 0)
    t['reps'] = sum(p.table.reps for p in profs)
    return LatencyProfile(t, profs[0].meta | dict(reps=int(t.reps.iloc[0]), rounds=len(profs)))

def hist_str(h): return ' '.join(f"{k}:{v}" for k, v in h.items() if v)

@call_parse
def main(threads:int=2,        # torch threads
         reps:int=10,          # Timed runs per piece in each profiling round
         rounds:int=5,         # Interleaved rounds (profile + measurements)
         curve_points:int=10,  # Front points (drop <= 3 pp when chosen) measured on the reporting part
         n_exact:int=20,       # Random front configurations checked against the predictor
         confidence:float=0.9, # Robust picks: the drop holds on this share of bootstrap resamples
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
        s = ' '.join(str(o) for o in a); print(s, flush=True); report.append(s)
    pd.set_option('display.width', 250); pd.set_option('display.max_colwidth', 90)
    net = MESSNet.load(ckpt).eval()
    dls, _, _ = camvid_loaders()
    src, _, _ = camvid_split()
    pairs = sorted(src.valid); n = len(pairs)
    net.meta.setdefault('input', input_meta(dls))     # networks saved by mess_learner record it; older checkpoints do not
    size = tuple(net.meta['input']['size'])
    prot = protocol_idx(n)
    dl_of = lambda idx: labelled_dl(dls, [pairs[i] for i in idx])
    say(f"network: {ckpt.name} ({net.config['arch']}, output stride {net.config['output_stride']}, {len(net.heads)} heads); "
        f"held-out sequence: {n} frames at {size}, {threads} threads, batch size 1")
    res = dict(date=datetime.datetime.now().isoformat(timespec='seconds'), torch=torch.__version__, python=platform.python_version(),
               threads=threads, size=list(size), net=net.full_config(), n_frames=n, protocols=PROTOCOLS, confidence=confidence)

    # 1. latency model: profile and budgeted measurements in interleaved rounds
    primary_report = dl_of(prot['halves'][1])
    bud = {k: ExitConfig(budget=k).predictor(net) for k in net.exit_keys}
    profs, meas = [], []
    t = time.perf_counter()
    for _ in range(rounds):
        profs.append(profile_net(net, size, reps=reps, progress=False))
        meas.append(measure(bud, primary_report, 1))
    res['latency_model_seconds'] = time.perf_counter() - t
    prof = median_profile(profs)
    lat = pd.DataFrame([dict(exit=k, predicted_ms=prof.exit_latency(k), measured_ms=float(np.median([m.loc[k, 'latency_ms'] for m in meas])),
                             measured_spread_ms=float(np.ptp([m.loc[k, 'latency_ms'] for m in meas])), miou=meas[0].loc[k, 'miou'])
                        for k in net.exit_keys])
    lat['ratio'] = lat.measured_ms / lat.predicted_ms
    say(f"\nLatency model: every budgeted exit profiled (pieces, random input) and measured (real frames: the last 50), "
        f"medians of {rounds} interleaved rounds:")
    say(lat.round(3).to_string(index=False))
    say(f"measured / predicted: {lat.ratio.min():.3f} - {lat.ratio.max():.3f} (median {lat.ratio.median():.3f})")

    # 2. caches and searches
    t = time.perf_counter(); full = build_cache(net, dl_of(range(n)), progress=False); res['cache_seconds'] = time.perf_counter() - t
    full0 = build_cache(net, dl_of(range(n)), policy=ExitPolicy(edge=False), progress=False)
    say(f"\ncache: {len(full.keys)} exits x {full.n_images} frames in {res['cache_seconds']:.0f} s")
    srs, res['search'] = {}, {}
    for p, (a, b) in prot.items():
        sr = srs[p] = search(full.subset(a), prof, max_exits=max_exits, progress=False)
        res['search'][p] = dict(n_configs=sr.n_configs, seconds=sr.seconds, configs_per_s=sr.n_configs / sr.seconds,
                                front_points={k: len(v) for k, v in sr.fronts.items()})
        say(f"search ({p}: {PROTOCOLS[p]}): {sr.n_configs:,} configurations in {sr.seconds:.1f} s "
            f"({sr.n_configs / sr.seconds / 1e6:.1f} M/s), {len(sr.fronts['latency'])} points on the latency front")

    # 3. exactness: the search's numbers are the predictor's
    sr, (a, b) = srs['halves'], prot['halves']
    choose_dl = dl_of(a)
    rng = np.random.default_rng(0); fr = sr.fronts['latency']
    cfgs = list(sr.targets().config) + [fr[i] for i in rng.choice(len(fr), min(n_exact, len(fr)), replace=False)]
    exact = []
    for c in cfgs:
        ev = c.predictor(net, full.base_policy()).evaluate(choose_dl); r = sr.evaluate(c)
        exact.append(dict(config=c.name, hist_equal=r['hist'] == ev['hist'], cm_equal=bool(np.array_equal(r['cm'], ev['cm'].numpy())),
                          miou_diff=abs(r['miou'] - ev['miou'])))
    ex = pd.DataFrame(exact)
    res['exactness'] = dict(n=len(ex), all_hist_equal=bool(ex.hist_equal.all()), all_cm_equal=bool(ex.cm_equal.all()), max_miou_diff=float(ex.miou_diff.max()))
    say(f"\nexactness vs EarlyExitPredictor.evaluate (halves, choosing part): {len(ex)} configurations, histograms equal: "
        f"{ex.hist_equal.all()}, confusion matrices bitwise equal: {ex.cm_equal.all()}, max |mIoU diff| {ex.miou_diff.max():.1e}")

    # 4. targets per protocol, measured on the reporting part
    res['targets'], goal = {}, []
    for p, (a, b) in prot.items():
        sr, rep = srs[p], full.subset(b); rep_dl = dl_of(b)
        picks = {}
        for kind, conf in (('point', None), ('robust', confidence)):
            for t_, r in sr.targets(confidence=conf).iterrows(): picks[(t_, kind)] = r.config
        preds = {FINAL: ExitConfig(budget=FINAL)} | {c.name: c for c in picks.values()}
        m = measure({k: c.predictor(net, full.base_policy()) for k, c in preds.items()}, rep_dl, rounds)
        ref, e0 = m.loc[FINAL], rep.evaluate(ExitConfig(budget=FINAL))
        rows = []
        for (t_, kind), c in picks.items():
            r, e = sr.evaluate(c), rep.evaluate(c)
            rows.append(dict(target=t_, pick=kind, config=c.name, choose_drop_pp=r['drop_pp'], choose_speedup=r['speedup'],
                             report_drop_pp=(e0['miou'] - e['miou']) * 100, measured_drop_pp=(ref.miou - m.loc[c.name, 'miou']) * 100,
                             latency_ms=m.loc[c.name, 'latency_ms'], speedup=ref.latency_ms / m.loc[c.name, 'latency_ms'],
                             pred_latency_ms=sr.costs['latency'].mean(c.exits, e['hist']) if c.budget is None else sr.costs['latency'].budget[c.budget],
                             hist=hist_str(m.loc[c.name, 'hist'])))
        tg = pd.DataFrame(rows); tg['latency_ratio'] = tg.latency_ms / tg.pred_latency_ms
        res['targets'][p] = dict(final_latency_ms=ref.latency_ms, final_miou=ref.miou, picks=json.loads(tg.to_json(orient='records')))
        say(f"\nThe paper's targets, {p} ({PROTOCOLS[p]}); single-exit network on the reporting part: mIoU {ref.miou:.4f}, "
            f"{ref.latency_ms:.2f} ms (median of {rounds} interleaved rounds):")
        say(tg.drop(columns='hist').round(3).to_string(index=False))
        for _, r in tg[tg.target == 'lowest cost at <= 0.1 pp drop'].iterrows():
            goal.append(dict(protocol=p, pick=r.pick, config=r.config, report_drop_pp=r.measured_drop_pp, speedup=r.speedup,
                             met=bool(r.measured_drop_pp <= 0.1 and r.speedup >= 3)))
    gl = pd.DataFrame(goal)
    res['goal_3x_at_0.1pp'] = json.loads(gl.to_json(orient='records'))
    say("\nGoal >= 3x lower mean latency at <= 0.1 pp mIoU drop, judged on the reporting part for the choice made on the other:")
    say(gl.round(3).to_string(index=False))

    # 5. the curve: front points of the choosing part measured on the reporting part
    res['curve'] = {}
    for p in ('halves', 'alternate'):
        sr, (a, b) = srs[p], prot[p]; rep = full.subset(b)
        f = sr.front('latency'); f = f[(f.drop_pp <= 3) & (f.n_exits > 0)]
        pick = f.iloc[np.unique(np.linspace(0, len(f) - 1, min(curve_points, len(f))).round().astype(int))] if len(f) else f
        m = measure({FINAL: ExitConfig(budget=FINAL).predictor(net)} | {r['name']: r.config.predictor(net, full.base_policy()) for _, r in pick.iterrows()},
                    dl_of(b), rounds)
        ref = m.loc[FINAL]; curve = []
        for name, r in pick.set_index('name').iterrows():
            e = rep.evaluate(r.config)
            curve.append(dict(config=name, n_exits=r.n_exits, choose_drop_pp=r.drop_pp, choose_speedup=r.speedup,
                              report_drop_pp=(ref.miou - m.loc[name, 'miou']) * 100, latency_ms=m.loc[name, 'latency_ms'],
                              speedup=ref.latency_ms / m.loc[name, 'latency_ms'], pred_latency_ms=sr.costs['latency'].mean(r.config.exits, e['hist']),
                              left_early=sum(v for k, v in e['hist'].items() if k != FINAL)))
        cv = pd.DataFrame(curve); cv['latency_ratio'] = cv.latency_ms / cv.pred_latency_ms
        res['curve'][p] = json.loads(cv.to_json(orient='records'))
        say(f"\nSpeed-accuracy, {p}: points of the choosing part's front (drop <= 3 pp there), measured on the reporting part:")
        say(cv.round(3).to_string(index=False))
    allr = [r['latency_ratio'] for p in res['targets'].values() for r in p['picks']] + [r['latency_ratio'] for c in res['curve'].values() for r in c]
    res['latency_model'] = dict(budgeted=json.loads(lat.to_json(orient='records')), ratio_range_budgeted=[float(lat.ratio.min()), float(lat.ratio.max())],
                                ratio_range_dynamic=[float(min(allr)), float(max(allr))])
    say(f"\nLatency model, measured / predicted: budgeted exits {lat.ratio.min():.3f} - {lat.ratio.max():.3f}; "
        f"early-exit configurations above {min(allr):.3f} - {max(allr):.3f}")

    # 6. edge correction on vs off
    rows = []
    for p, (a, b) in prot.items():
        for edge, c_ in ((True, full), (False, full0)):
            s_ = srs[p] if edge else search(c_.subset(a), prof, max_exits=max_exits, progress=False)
            rep = c_.subset(b); e0 = rep.evaluate(ExitConfig(budget=FINAL))
            for t_, r in s_.targets().iterrows():
                e = rep.evaluate(r.config)
                rows.append(dict(protocol=p, edge=edge, target=t_, config=r.config.name, choose_drop_pp=r.drop_pp, choose_speedup=r.speedup,
                                 report_drop_pp=(e0['miou'] - e['miou']) * 100,
                                 report_pred_speedup=s_.costs['latency'].final / (s_.costs['latency'].mean(r.config.exits, e['hist']) if r.config.budget is None
                                                                                 else s_.costs['latency'].budget[r.config.budget])))
    ed = pd.DataFrame(rows)
    res['edge_ablation'] = json.loads(ed.to_json(orient='records'))
    say("\nEdge correction on vs off (each searched on its own cache of the choosing part; exact predictions on the reporting part):")
    say(ed.round(3).to_string(index=False))

    # what the notebooks and widgets show without the network: the cache, a frame strip, one frame's logits at one exit
    sr, (a, b) = srs['halves'], prot['halves']
    sr.cache.save(out/'search_cache.pt', overwrite=overwrite)
    image_strip(net, choose_dl, sr, n=6).save(out/'search_strip.npz', overwrite=overwrite)
    c1 = sr.targets().config.iloc[1]
    key = c1.exits[0] if c1.exits else sorted(net.heads)[len(net.heads) // 2]
    rep_dl = dl_of(b); xb, yb = next(iter(rep_dl))
    with torch.no_grad(): nat = net.exit_logits(key, net.run_segments(xb[:1], 0, net.exit_pos(key)))
    inp = net.meta['input']
    img = ((xb[0].cpu() * torch.tensor(inp['std'])[:, None, None] + torch.tensor(inp['mean'])[:, None, None]).clamp(0, 1) * 255).round().byte()
    atomic_write(out/'example_exit.npz', lambda p: np.savez_compressed(open(p, 'wb'), key=np.array(key), stride=np.array(net.exit_stride(key)),
                 image=img.permute(1, 2, 0).numpy(), label=yb[0].numpy().astype(np.uint8), logits=nat[0].numpy(), frame=np.array(rep_dl.items[0][0].name)), overwrite)
    sr.save(out/'search.json', overwrite=overwrite)
    prof.save(out/'search_profile.json', overwrite=overwrite)
    (out/'search_bench.json').write_text(json.dumps(res, indent=1, default=float))
    (out/'search_bench.txt').write_text('\n'.join(report) + '\n')
    print(f"wrote {', '.join(o.name for o in outs)} to {out.name}/")
