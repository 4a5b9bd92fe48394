"""Trust benchmark: do the search's promises hold on frames it was not chosen on? Certified picks (issue 24) and online
risk control (issue 25), on the network of `bench_train_shift.py` (ResNet-18 MESS trained on CamVid sequence 0016E5 only;
sequences 0001TP, 62 frames, and 0006R0, 101 frames, never trained on; or, with `--train-seq`, on another sequence).

Everything is computed exactly from caches of the unseen frames (one pass of the network over them, `build_cache`, with
labels: confusion matrices for the mIoU against ground truth, and agreement counts for the label-free disagreement), and
latencies from a latency profile of this machine (`profile_net`); a few picks are also measured end to end
(`EarlyExitPredictor.evaluate`, batch size 1, interleaved rounds, audits included) to check the predicted speed-ups.

Part A, within one unseen sequence: `--splits` random splits of its clips (`--clip` frames) into calibration and
evaluation clips. On the calibration clips: the paper's point pick (lowest latency at <= 0.1 pp drop), the
bootstrap-robust pick, certified picks (Pareto Testing, disagreement and mIoU-drop losses, two bounds), and an oracle
chosen on the evaluation clips. On the evaluation clips: realised risk, violation of the promise, speed-up, mIoU drop
vs the final exit (pooled).

Part B, across sequences: calibrate on one unseen sequence, evaluate on the other (both ways); and calibrate on the first
`--head` frames of the evaluation sequence itself (labelled: the point pick; label-free: the certified disagreement pick)
and evaluate on the rest.

Part C, online control: the two unseen sequences played as one stream (both orders), deployed with a pick made offline on
the training sequence's own frames (the calibration a user has: the training drive; 0016E5's val frames by default) — the paper's 0.1 pp pick, and for each alpha the
cheapest early-exit chain whose disagreement there is <= alpha (the "alpha start"; also with tight thresholds,
`ExitCache.tighten`: the same decisions on the training drive, the most conservative elsewhere, and that with the offset kept >= 0)
— with audits (p) and rolling risk control (alpha, step sizes `--gammas`, and `--spans`: steps in units of the
deployed thresholds' span, `step_size`, 5 being what `mess_fast predict --audit` uses), each controlled run with `--seeds`
seeds of the audit draws; the same without control; realised disagreement overall and after the first 30 frames of each sequence, per window,
mIoU drop vs the final exit against ground truth, predicted speed-up including the audits, frames until recovery after
the switch of sequence; the share of runs that keep the promise (and run >= 2x) after 30 frames of each sequence; and the
ceiling — the cheapest configuration within alpha chosen on the judged frames themselves. A few streams are also run end
to end to measure the speed-up with the audits (JSON: every run of seed 0, the summary over all seeds, the traces of
seed 0 at p 0.1).

Writes results/trust.json and results/trust.txt (no machine paths). The search space is the benchmark's heads and
pixel thresholds with up to 2 early exits and image thresholds 0, 0.1, ..., 1 (about 2.5e5 configurations per search:
Part A runs hundreds of searches).

    python bench/bench_trust.py            # after bench_train_shift.py; about 30-40 min on 2 otherwise idle cores
    python bench/bench_trust.py --parts C,M --gammas 0.5,2 --ckpt results/os16/mess_r18_0016E5.pth --out results/os16
    python bench/bench_trust.py --parts C,M --gammas 0.5,2,5,10 --ckpt results/os8/mess_r18_0016E5.pth --out results/os8
    python bench/bench_trust.py --train-seq 0006R0 --parts C,M --gammas 0.5,2,5,10 --ckpt results/os8_0006R0/mess_r18_0006R0.pth --out results/os8_0006R0

`--train-seq 0006R0` judges a network trained on 0006R0 on streams of 0001TP and 0016E5 (305 frames): settings chosen on
the runs of the 0016E5 network (the controller's step, 5 spans) are checked there out of sample. The end-to-end
measurements run on the last unseen sequence (0006R0 by default, 0016E5 then).
"""
import json, time, datetime, platform
from pathlib import Path
import numpy as np, pandas as pd, torch
from fastcore.script import call_parse
from mess_fast.core import FINAL, miou
from mess_fast.loaders import mess_dls, labelled_dl
from mess_fast.model import MESSNet
from mess_fast.policy import RiskController, step_size
from mess_fast.profile import profile_net
from mess_fast.cache import build_cache, ExitCache, ExitConfig, stream_cost
from mess_fast.search import search
from mess_fast.certify import certify, clip_units, unit_losses
from common import RESULTS, SIZE
from bench_train_shift import shift_split, unseen_pairs, training_drive, unseen_of, TRAIN_SEQ, SHIFT_CKPT

TH_IMG = tuple(round(0.1 * i, 1) for i in range(11))

def pooled_drop(cache, cfg):
    "mIoU (against ground truth) of the final exit minus that of `cfg`, pooled over the cached frames, in pp"
    return (cache.evaluate(ExitConfig(budget=FINAL))['miou'] - cache.evaluate(cfg)['miou']) * 100

def speedup(cache, cfg, lat):
    "Predicted mean-latency speed-up of `cfg` over the final exit on the cached frames"
    r = cache.evaluate(cfg, [lat]); return lat.budgeted(FINAL) / r['latency']

def row_of(cache, cfg, lat, method, **kw):
    "What a pick does on the evaluation frames"
    r = cache.evaluate(cfg, [lat])
    return dict(method=method, config=cfg.name, disagreement=r['disagreement'], drop_pp=pooled_drop(cache, cfg),
                speedup=lat.budgeted(FINAL) / r['latency'], **kw)

def point_pick(cache, prof, max_exits=2):
    "The paper's 0.1 pp target on `cache` (the point pick), and the search (for the bootstrap-robust one)"
    res = search(cache, prof, max_exits=max_exits, th_img=TH_IMG, progress=False)
    return res.pick('latency', max_drop_pp=0.1), res

def oracle(cache, prof, alpha, max_exits=2):
    "The cheapest configuration whose disagreement on `cache` itself is at most alpha (chosen on the frames it is judged on)"
    res = search(cache, prof, max_exits=max_exits, th_img=TH_IMG, accuracy='agreement', progress=False)
    ok = [c for c in res.fronts['latency'] if cache.evaluate(c)['disagreement'] <= alpha]
    return ok[0] if ok else ExitConfig(budget=FINAL)          # the front is cheapest first

def control_pick(cache, prof):
    "Part C's deployment: the paper's 0.1 pp pick on `cache` or, when that is a budgeted network (nothing to control), the cheapest early-exit chain of the front within 1 pp"
    cfg, res = point_pick(cache, prof)
    if cfg.budget is None: return cfg, "the paper's 0.1 pp pick"
    chains = [c for c in res.fronts['latency'] if c.budget is None and pooled_drop(cache, c) <= 1.0]   # cheapest first
    return (chains[0], "the cheapest early-exit chain within 1 pp (the 0.1 pp pick was a budgeted network)") if chains else (cfg, "the 0.1 pp pick")

def alpha_start(cache, prof, alpha, max_exits=2):
    ("Part C's other deployment: the cheapest early-exit chain (something to control) whose disagreement on `cache` (the "
     "training drive) is <= alpha")
    res = search(cache, prof, max_exits=max_exits, th_img=TH_IMG, accuracy='agreement', truncated=False, progress=False)
    ok = [c for c in res.fronts['latency'] if c.budget is None and res.pooled_disagreement(c) <= alpha]
    return ok[0] if ok else ExitConfig(budget=FINAL)          # the front is cheapest first

def judge_run(stream, n0, tr, dep, lat, head=30):
    ("What one replay `tr` of `dep` over `stream` (its second sequence starts at frame `n0`) did after the first `head` "
     "frames of each sequence: `(trace, per-frame disagreement, judged frames, dict of disagreement_after30, "
     "drop_pp_after30 against ground truth, speedup predicted with the audits, audits)`")
    T = pd.DataFrame(tr)
    ex = np.array([stream.keys.index(k) for k in T.exit])
    dis = stream.disagreement()[np.arange(stream.n_images), ex]
    after = np.r_[np.arange(head, n0), np.arange(n0 + head, stream.n_images)]
    cms = stream.cms[np.arange(stream.n_images), ex]
    drop = (miou(stream.cms[after, -1].sum(0), stream.void) - miou(cms[after].sum(0), stream.void)) * 100
    return T, dis, after, dict(disagreement_after30=float(dis[after].mean()), drop_pp_after30=float(drop),
                               speedup=float(lat.budgeted(FINAL) / stream_cost(tr, dep, lat)), audits=int(T.audited.sum()))

def settings(cache, max_exits=2): return dict(heads=cache.heads, th_pix=list(cache.th_pix), th_img=list(TH_IMG), max_exits=max_exits)

@call_parse
def main(train_seq:str=TRAIN_SEQ, # The sequence the network was trained on; the other two are the unseen streets
         splits:int=100,        # Random clip splits per unseen sequence (Part A)
         clip:int=2,            # Frames per calibration unit
         alphas:str='0.05,0.15', # Disagreement targets of the certified picks (Part A/B)
         alpha_drop:float=0.05, # mIoU-drop target of the drop certificate (a fraction: 0.05 = 5 pp per clip)
         delta:float=0.1,       # Allowed probability that a certificate is wrong
         head:int=30,           # Part B: frames of the evaluation sequence used to recalibrate on it
         rounds:int=3,          # Interleaved rounds of the end-to-end measurements
         parts:str='A,B,C,M',   # Which parts to run (M: the end-to-end measurements)
         stem:str='trust',      # Output file names: STEM.json, STEM.txt
         gammas:str='0.5',      # Part C: step sizes of the controller tried from the alpha start (the 0.1 pp start: the first)
         spans:str='1,2,3,5,7,10', # Part C: steps in units of the deployed thresholds' span (step_size; 5: the CLI default)
         seeds:int=20,          # Part C: seeds of the audit draws per controlled run (traces are kept for seed 0)
         threads:int=2,         # torch threads
         ckpt:str=str(SHIFT_CKPT), out:str=str(RESULTS)):
    "Run the trust benchmark; print tables; write STEM.json and STEM.txt"
    torch.set_num_threads(threads)
    parts = [p.strip().upper() for p in parts.split(',')]
    if not set(parts) <= set('ABCM'): raise SystemExit(f"--parts: expected letters among A,B,C,M, got {parts}")
    if set(parts) != set('ABCM') and Path(out).resolve() == RESULTS.resolve() and stem == 'trust':
        raise SystemExit("--parts without all of A,B,C,M would overwrite the published results/trust.json: give --out or --stem")
    t_start = time.perf_counter()
    out, report = Path(out), []
    def say(*a):
        s = ' '.join(str(o) for o in a); print(s, flush=True); report.append(s)
    pd.set_option('display.width', 250); pd.set_option('display.max_colwidth', 80)
    unseen = unseen_of(train_seq); meas_seq = unseen[-1]
    made = Path(ckpt).parent/'shift_train.json'
    if made.exists() and (was := json.loads(made.read_text()).get('train_sequence', train_seq)) != train_seq:
        raise SystemExit(f"{Path(ckpt).name} was trained on {was} ({made.name}), not on --train-seq {train_seq}")
    net = MESSNet.load(ckpt).eval()
    src = shift_split(train_seq)
    dls = mess_dls(src, size=SIZE, bs=8)
    pairs = {s: unseen_pairs(src, s) for s in unseen}
    train_val = training_drive(src)
    res = dict(date=datetime.datetime.now().isoformat(timespec='seconds'), torch=torch.__version__, python=platform.python_version(),
               threads=threads, network=dict(arch=net.config['arch'], output_stride=net.config['output_stride'], trained_on=train_seq, unseen=list(unseen), size=list(SIZE)),
               settings=dict(splits=splits, clip=clip, delta=delta, alpha_drop=alpha_drop, head=head, max_exits=2, th_img=TH_IMG,
                             parts=parts, gammas=[float(g) for g in gammas.split(',')]))
    say(f"network trained on {train_seq}; unseen: " + ', '.join(f"{s} ({len(p)} frames)" for s, p in pairs.items()))
    t = time.perf_counter()
    caches = {s: build_cache(net, labelled_dl(dls, p, bs=8), progress=False) for s, p in pairs.items()}
    caches['train'] = build_cache(net, labelled_dl(dls, train_val, bs=8), progress=False)
    say(f"caches of {', '.join(f'{k}: {c.n_images}' for k, c in caches.items())} frames in {time.perf_counter() - t:.0f} s")
    prof = profile_net(net, SIZE, reps=10, progress=False)
    lat = prof.costs(caches[meas_seq].keys)
    for s in unseen:
        c = caches[s]
        say(f"{s}: final exit mIoU {c.evaluate(ExitConfig(budget=FINAL))['miou'] * 100:.2f}; "
            f"best early exit alone {max(c.evaluate(ExitConfig(budget=k))['miou'] for k in c.heads) * 100:.2f}")
    alphas = [float(a) for a in alphas.split(',')]

    # ---- Part A: within one unseen sequence, random clip splits
    rows = []
    for s in (unseen if 'A' in parts else ()):
        c = caches[s]; units = clip_units(c.items, clip); n_u = units.max() + 1
        for sp in range(splits):
            rng = np.random.default_rng(sp)
            cal_u = rng.permutation(n_u)[:n_u // 2]
            fc, fe = np.flatnonzero(np.isin(units, cal_u)), np.flatnonzero(~np.isin(units, cal_u))
            cc, ce = c.subset(fc), c.subset(fe)
            pp, rs = point_pick(cc, prof)
            rows.append(row_of(ce, pp, lat, 'point (0.1 pp)', seq=s, split=sp, promise=np.nan))
            rows.append(row_of(ce, rs.pick('latency', max_drop_pp=0.1, confidence=0.9), lat, 'robust (0.1 pp, 90%)', seq=s, split=sp, promise=np.nan))
            for a in alphas:
                for bound in ('hb', 'wsr'):
                    ct = certify(cc, {'latency': lat}, settings(cc), a, delta, 'disagreement', clip, bound=bound, seed=sp)
                    rows.append(row_of(ce, ct.config, lat, f'certified disagreement {bound}', seq=s, split=sp, promise=a, alpha=a,
                                       certified=ct.certified, alpha_min=ct.alpha_min))
                rows.append(row_of(ce, oracle(ce, prof, a), lat, 'oracle (chosen on evaluation clips)', seq=s, split=sp, promise=a, alpha=a))
            ct = certify(cc, {'latency': lat}, settings(cc), alpha_drop, delta, 'drop', clip, bound='wsr', seed=sp)
            ld = unit_losses(ce, ct.config, clip_units(ce.items, clip), 'drop').mean()
            rows.append(row_of(ce, ct.config, lat, 'certified drop wsr', seq=s, split=sp, promise=alpha_drop, alpha=alpha_drop,
                               certified=ct.certified, alpha_min=ct.alpha_min, clip_drop=ld))
        say(f"Part A {s}: {splits} splits done ({time.perf_counter() - t_start:.0f} s)")
    A = pd.DataFrame(rows) if rows else pd.DataFrame(columns=['seq', 'method', 'alpha', 'split', 'certified', 'disagreement', 'drop_pp',
                                                              'speedup', 'alpha_min', 'promise', 'clip_drop'])
    A['violated'] = np.where(A.method == 'certified drop wsr', A.get('clip_drop', np.nan) > A.promise, A.disagreement > A.promise)
    summ = (A.groupby(['seq', 'method', 'alpha'], dropna=False)
             .agg(picks=('split', 'size'), certified=('certified', 'mean'), violation_rate=('violated', 'mean'),
                  disagreement=('disagreement', 'mean'), drop_pp=('drop_pp', 'mean'), speedup=('speedup', 'median'),
                  alpha_min=('alpha_min', 'median')).reset_index())
    if rows:
        say("\nPart A — within one unseen sequence, random splits of its clips (calibrate on half, judge on the other half):")
        say(summ.round(4).to_string(index=False))
    res['within'] = json.loads(summ.to_json(orient='records'))

    # ---- Part B: across sequences, and recalibration on the first frames of the new one
    rows = []
    for cal, ev in ((unseen[0], unseen[1]), (unseen[1], unseen[0])) if 'B' in parts else ():
        cc, ce = caches[cal], caches[ev]
        tail = ce.subset(range(head, ce.n_images)); headc = ce.subset(range(head))
        pp, rs = point_pick(cc, prof)
        rows.append(row_of(tail, pp, lat, 'point (0.1 pp)', cal=cal, eval=ev))
        rows.append(row_of(tail, rs.pick('latency', max_drop_pp=0.1, confidence=0.9), lat, 'robust (0.1 pp, 90%)', cal=cal, eval=ev))
        for a in alphas:
            ct = certify(cc, {'latency': lat}, settings(cc), a, delta, 'disagreement', clip, bound='wsr')
            rows.append(row_of(tail, ct.config, lat, 'certified disagreement wsr', cal=cal, eval=ev, alpha=a, certified=ct.certified))
            ct = certify(headc, {'latency': lat}, settings(headc), a, delta, 'disagreement', clip, bound='wsr')
            rows.append(row_of(tail, ct.config, lat, f'label-free, certified on the first {head} frames', cal=f'{ev}[:{head}]', eval=ev, alpha=a,
                               certified=ct.certified))
            rows.append(row_of(tail, oracle(tail, prof, a), lat, 'oracle (chosen on the evaluation frames)', cal=ev, eval=ev, alpha=a))
        pp2, _ = point_pick(headc, prof)
        rows.append(row_of(tail, pp2, lat, f'labelled, point pick on the first {head} frames', cal=f'{ev}[:{head}]', eval=ev))
    B = pd.DataFrame(rows)
    if rows:
        say(f"\nPart B — across sequences (judged on the evaluation sequence after its first {head} frames):")
        say(B.round(4).to_string(index=False))
    res['across'] = json.loads(B.to_json(orient='records'))

    # ---- Part C: online control over a stream of the two unseen sequences
    deployed, why = control_pick(caches['train'], prof)
    say(f"\nPart C — the deployed configuration, {why} on {caches['train'].n_images} frames of {train_seq} "
        f"(the training drive): {deployed.name}")
    starts = {a: alpha_start(caches['train'], prof, a) for a in (0.02, 0.05, 0.10)}
    say("Part C — the other start, for each alpha the cheapest configuration whose disagreement on the training drive is "
        "<= alpha: " + '; '.join(f"{a}: {c.name}" for a, c in starts.items()))
    tight = {a: caches['train'].tighten(c) for a, c in starts.items()}     # the same decisions on the training drive
    say("Part C — the same with tight thresholds (ExitCache.tighten on the training drive): "
        + '; '.join(f"{a}: {c.name}" for a, c in tight.items()))
    rows, traces = [], {}
    if deployed.budget is not None: say("the pick is a budgeted network: nothing to control")
    gs = [float(g) for g in gammas.split(',')]
    # (start, p, alpha, configuration, gamma, lowest offset)
    runs = [('0.1pp', 0., 0.05, deployed, gs[0], -1.)] + [('0.1pp', p, a, deployed, gs[0], -1.) for p in (0.05, 0.1, 0.2)
                                                          for a in (0.02, 0.05, 0.10)]
    for name, st in (('alpha', starts), ('alpha-tight', tight)):
        runs += [(name, 0., a, st[a], gs[0], -1.) for a in (0.02, 0.05, 0.10)] + [
            (name, p, a, st[a], g, -1.) for g in gs for p in (0.05, 0.1, 0.2) for a in (0.02, 0.05, 0.10)]
    # the tight start with the offset kept >= 0 (never looser than the thresholds chosen on the training drive):
    # no wind-up below the confidences of an easy stretch, no loosening either (predict --theta-min 0)
    runs += [('alpha-tight, theta>=0', p, a, tight[a], g, 0.) for g in gs for p in (0.05, 0.1, 0.2) for a in (0.02, 0.05, 0.10)]
    # the step in units of the deployed thresholds' span (step_size; 5 x span with theta >= 0: what predict --audit does)
    sp = [float(v) for v in spans.split(',')]
    runs += [(f'alpha-tight, {k:g} span{", theta>=0" if lo == 0 else ""}', p, a, tight[a],
              step_size(tight[a].policy(), rel=k), lo) for k in sp for lo in (0., -1.) for p in (0.05, 0.1, 0.2)
             for a in (0.02, 0.05, 0.10)]
    for order in ((unseen[0], unseen[1]), (unseen[1], unseen[0])) if 'C' in parts else ():
        stream = ExitCache.concat([caches[order[0]], caches[order[1]]])
        n0 = caches[order[0]].n_images
        for (start, p, a, dep, g, lo), seed in ((r, sd) for r in runs for sd in range(seeds if r[1] > 0 else 1)):
            if dep.budget is not None: continue
            tr = stream.replay(dep, RiskController(alpha=a, p=p, gamma=g, seed=seed, theta_range=(lo, 1.)))
            T, dis, after, judged = judge_run(stream, n0, tr, dep, lat)
            win = pd.Series(dis).rolling(20, min_periods=20).mean()
            rec = next((i - n0 for i in range(n0, stream.n_images) if abs(win[i] - a) <= 0.01), None)
            rows.append(dict(stream=' > '.join(order), start=start, config=dep.name, p=p, alpha=a, gamma=g, theta_min=lo, seed=seed,
                             control=p > 0, disagreement=float(dis.mean()), window_max_after30=float(win[after].max()),
                             **judged, recovery_frames=rec, flags=int(T.flag.sum())))
            if seed == 0 and p in (0, 0.1): traces[f"{' > '.join(order)} start={start} p={p} alpha={a} gamma={g:g}"] = T[['frame', 'exit', 'audited', 'loss', 'theta_after', 'window_risk', 'flag']].round(5).to_dict('list')
    C = pd.DataFrame(rows)
    C['safe'] = (C.disagreement_after30 <= C.alpha + 0.01) & (C.drop_pp_after30 <= 1)      # the promise, after 30 frames
    C['goal'] = C.safe & (C.speedup >= 2)                                                    # ... and >= 2x with the audits
    say("\nPart C — online control over the stream of the two unseen sequences (exact replays from the caches; speed-up "
        f"includes the audits), seed 0 of {seeds}:")
    say(C[C.seed == 0].drop(columns=['seed', 'safe', 'goal']).round(4).to_string(index=False))
    S = (C.groupby(['start', 'p', 'alpha', 'gamma', 'theta_min'], sort=False)
          .agg(runs=('goal', 'size'), goal=('goal', 'mean'), safe=('safe', 'mean'), disagreement_after30_max=('disagreement_after30', 'max'),
               drop_pp_after30_max=('drop_pp_after30', 'max'), speedup_min=('speedup', 'min'), speedup_median=('speedup', 'median'))
          .reset_index())
    say(f"\nPart C — share of runs (both stream orders x {seeds} seeds of the audit draws) that keep the promise after 30 frames "
        "of each sequence (disagreement <= alpha + 1 pp and mIoU drop <= 1 pp: safe) and also run >= 2x faster than the final "
        "exit with the audits (goal):")
    say(S.round(4).to_string(index=False))
    # the ceiling: the cheapest configuration within alpha chosen on the very frames it is judged on (a finer image-threshold grid)
    fine = tuple(round(0.01 * i, 2) for i in range(101))
    ceil = []
    for s in unseen:
        tail = caches[s].subset(range(30, caches[s].n_images))
        rs = search(tail, prof, max_exits=2, th_img=fine, accuracy='agreement', progress=False)
        for a in (0.02, 0.05, 0.10):
            ok = [c for c in rs.fronts['latency'] if rs.pooled_disagreement(c) <= a]
            c = ok[0] if ok else ExitConfig(budget=FINAL)
            ceil.append(dict(seq=s, alpha=a, config=c.name, disagreement=rs.pooled_disagreement(c), speedup=speedup(tail, c, lat)))
    Ce = pd.DataFrame(ceil)
    say("\nPart C — the ceiling: per unseen sequence after its first 30 frames, the cheapest configuration (any exits, image "
        "thresholds in steps of 0.01) whose disagreement there is <= alpha, chosen on those frames themselves:")
    say(Ce.round(4).to_string(index=False))
    res['online'] = dict(deployed=deployed.name, deployed_why=why, starts={str(a): c.name for a, c in starts.items()},
                         tight_starts={str(a): c.name for a, c in tight.items()}, seeds=seeds,
                         summary=json.loads(S.to_json(orient='records')), ceiling=json.loads(Ce.to_json(orient='records')),
                         runs=json.loads(C[C.seed == 0].to_json(orient='records')), traces=traces)

    # ---- end-to-end measurements: a few picks and one controlled stream, interleaved rounds
    ev_pairs = pairs[meas_seq][head:]
    dl = labelled_dl(dls, ev_pairs, bs=1)                       # batch size 1: each frame pays for its own exits
    cands = {FINAL: ExitConfig(budget=FINAL), f'deployed (chosen on {train_seq})': deployed}
    cands_ctrl = {}
    if deployed.budget is None:
        cands_ctrl['deployed + control p=0.1 alpha=0.05'] = (deployed, dict(alpha=0.05, p=0.1, gamma=float(gammas.split(',')[0])))
    for a in (0.05, 0.10):
        for name, st in (('alpha start', starts), ('tight alpha start', tight)):
            if st[a].budget is None:
                cands[f'{name} {a} (no control)'] = st[a]
                for g in gs: cands_ctrl[f'{name} {a} + control p=0.1 alpha={a} gamma={g}'] = (st[a], dict(alpha=a, p=0.1, gamma=g))
    if tight[0.10].budget is None:    # what predict --audit 0.1 --alpha 0.1 does by default: 5 x span, theta >= 0
        cands_ctrl['tight alpha start 0.1 + control p=0.1 alpha=0.1, 5 span, theta>=0 (the CLI default)'] = (
            tight[0.10], dict(alpha=0.1, p=0.1, gamma=step_size(tight[0.10].policy()), theta_range=(0., 1.)))
    meas = {}
    for r in range(rounds if 'M' in parts else 0):
        for name, cfg in cands.items():
            meas.setdefault(name, []).append(cfg.predictor(net, caches[meas_seq].base_policy()).evaluate(dl)['latency_ms'])
        for name, (cfg, kw) in cands_ctrl.items():
            e = cfg.predictor(net, caches[meas_seq].base_policy()).evaluate(dl, controller=RiskController(seed=0, **kw))
            meas.setdefault(name, []).append(e['latency_ms'])
    M = pd.DataFrame([dict(name=k, latency_ms=float(np.median(v)), speedup=float(np.median(meas[FINAL]) / np.median(v))) for k, v in meas.items()])
    say(f"\nMeasured end to end on {meas_seq} after its first {head} frames (batch size 1, median of {rounds} interleaved rounds):")
    say(M.round(3).to_string(index=False))
    res['measured'] = json.loads(M.to_json(orient='records'))
    res['seconds'] = time.perf_counter() - t_start
    (out/f'{stem}.json').write_text(json.dumps(res, indent=1, default=float))
    (out/f'{stem}.txt').write_text('\n'.join(report) + '\n')
    say(f"\nwrote {stem}.json and {stem}.txt to {out.name}/ in {res['seconds'] / 60:.1f} min")
