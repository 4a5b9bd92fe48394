"""Where should the online controller start, and what would a perfect start give? A companion of `bench_trust.py`
(Part C) on the same networks, caches and streams (the two unseen sequences played one after the other, both orders).

`bench_trust.py` deploys the controller from a pick made on the training drive: frames the network was trained on,
which flatter every early exit. Here the same controller — what `mess_fast predict --audit P --alpha A` does by default:
a step of 5 x the deployed thresholds' span (`step_size`), the offset kept >= 0 — starts from:

- `training drive`: the cheapest early-exit chain within alpha on the training drive, tight thresholds (the start that
  `bench_trust.py` deployed, read from its `trust.json` in `--out`; `training drive, re-profiled`: the same rule with
  this run's latency profile, when that ranks another chain cheapest);
- `training drive, alpha/2`: the same for half the target (a margin for the flattering calibration);
- `label-free, first 30 frames`: chosen (within alpha, and within 0.75 alpha, tight thresholds) on the first 30 frames of
  the stream's first sequence, with no labels: the disagreement with the final exit is all it needs. Those frames are
  not judged (the goal is judged after the first 30 frames of each sequence);
- `oracle`: the cheapest configuration within alpha on the judged frames of both sequences pooled (image thresholds in
  steps of 0.01) — not available to a user: the bound of a perfect fixed start under this controller and these audits.

For each: the run without control, and `--seeds` seeded controlled runs per stream order at each `--ps`; the share of
runs that keep the promise after 30 frames of each sequence (disagreement <= alpha + 1 pp, mIoU drop <= 1 pp: `safe`) and
also run >= 2x faster than the final exit with the audits (`goal`), speed-ups predicted from the latency profile.
Writes `trust_starts.json` and `trust_starts.txt` next to the checkpoint's other results (no machine paths):

    python bench/bench_trust_starts.py --ckpt results/os8/mess_r18_0016E5.pth --out results/os8
    python bench/bench_trust_starts.py --train-seq 0006R0 --ckpt results/os8_0006R0/mess_r18_0006R0.pth --out results/os8_0006R0
"""
import json, time, datetime, platform
from pathlib import Path
import pandas as pd, torch
from fastcore.script import call_parse
from mess_fast.loaders import mess_dls, labelled_dl
from mess_fast.model import MESSNet
from mess_fast.policy import RiskController, step_size
from mess_fast.profile import profile_net
from mess_fast.cache import build_cache, ExitCache, ExitConfig
from mess_fast.search import search
from common import SIZE
from bench_train_shift import shift_split, unseen_pairs, training_drive, unseen_of, TRAIN_SEQ
from bench_trust import alpha_start, judge_run

FINE = tuple(round(0.01 * i, 2) for i in range(101))

def replay(stream, n0, dep, lat, alpha, p, seed, rel=5., head=30):
    "What one run of the CLI's default controller from `dep` over `stream` does (`judge_run`)"
    ctrl = RiskController(alpha=alpha, p=p, gamma=step_size(dep.policy(), rel=rel), seed=seed, theta_range=(0., 1.))
    return judge_run(stream, n0, stream.replay(dep, ctrl), dep, lat, head)[-1]

@call_parse
def main(train_seq:str=TRAIN_SEQ, # The sequence the network was trained on; the other two are the unseen streets
         ckpt:str='results/os8/mess_r18_0016E5.pth', # The network of `bench_train_shift.py`
         out:str='results/os8',  # Where trust_starts.json/.txt go
         alpha:float=0.1,        # The disagreement target
         ps:str='0.05,0.1',      # Audit rates
         seeds:int=20,           # Seeds of the audit draws per stream order
         head:int=30,            # Frames at the start of each sequence that are not judged (and the label-free calibration)
         threads:int=2):
    "Controlled runs from five starts, the oracle's among them; writes trust_starts.json/.txt"
    torch.set_num_threads(threads)
    t0, out, report = time.perf_counter(), Path(out), []
    def say(*a):
        s = ' '.join(str(o) for o in a); print(s, flush=True); report.append(s)
    pd.set_option('display.width', 250); pd.set_option('display.max_colwidth', 90)
    unseen = unseen_of(train_seq)
    net = MESSNet.load(ckpt).eval()
    src = shift_split(train_seq)
    dls = mess_dls(src, size=SIZE, bs=8)
    train_val = training_drive(src)
    caches = {s: build_cache(net, labelled_dl(dls, unseen_pairs(src, s), bs=8), progress=False) for s in unseen}
    caches['train'] = tr = build_cache(net, labelled_dl(dls, train_val, bs=8), progress=False)
    prof = profile_net(net, SIZE, reps=10, progress=False)
    lat = prof.costs(caches[unseen[-1]].keys)
    say(f"network trained on {train_seq} (output stride {net.config['output_stride']}); unseen streams of "
        + ', '.join(f"{s} ({caches[s].n_images} frames)" for s in unseen) + f"; alpha {alpha}")
    tails = ExitCache.concat([caches[s].subset(range(head, caches[s].n_images)) for s in unseen])
    rs = search(tails, prof, max_exits=2, th_img=FINE, accuracy='agreement', progress=False)
    oracle = next(c for c in rs.fronts['latency'] if rs.pooled_disagreement(c) <= alpha)    # the front is cheapest first
    def first_frames(order, frac):
        h = caches[order[0]].subset(range(head)); return h.tighten(alpha_start(h, prof, alpha * frac))
    # the start bench_trust.py deployed (chosen with its own latency profile), tightened here again: its untightened name
    # is exact (image thresholds on the 0.1 grid), a tight threshold's printed digits need not be
    made = out/'trust.json'
    if not made.exists(): raise SystemExit(f"{made}: run bench_trust.py --train-seq {train_seq} --out {out} first")
    trust = json.loads(made.read_text())
    if (was_seq := trust['network'].get('trained_on', TRAIN_SEQ)) != train_seq:
        raise SystemExit(f"{made.name} in {out.name}/ is of a network trained on {was_seq}, not on --train-seq {train_seq}")
    if str(alpha) not in trust['online']['starts']:
        raise SystemExit(f"{made.name} has no start for alpha {alpha} (it has {', '.join(trust['online']['starts'])})")
    was = tr.tighten(ExitConfig.from_name(trust['online']['starts'][str(alpha)]))
    assert was.name == trust['online']['tight_starts'][str(alpha)], (was.name, trust['online']['tight_starts'])
    now = tr.tighten(alpha_start(tr, prof, alpha))
    starts = {'training drive': lambda o: was}
    if was != now: starts['training drive, re-profiled'] = lambda o: now   # the same rule, this run's latency profile
    starts |= {'training drive, alpha/2': lambda o: tr.tighten(alpha_start(tr, prof, alpha / 2)),
               f'label-free, first {head} frames': lambda o: first_frames(o, 1.),
               f'label-free, first {head} frames, 0.75 alpha': lambda o: first_frames(o, 0.75),
               'oracle (the judged frames)': lambda o: oracle}
    P = [0.] + [float(p) for p in ps.split(',')]
    rows = []
    for name, pick in starts.items():
        for order in ((unseen[0], unseen[1]), (unseen[1], unseen[0])):
            dep = pick(order)
            if dep.budget is not None:                   # a budgeted network: nothing to control
                say(f"{name} ({' > '.join(order)}): {dep.name}, a budgeted network: no controlled runs"); continue
            stream, n0 = ExitCache.concat([caches[order[0]], caches[order[1]]]), caches[order[0]].n_images
            for p in P:
                for seed in range(seeds if p > 0 else 1):
                    rows.append(dict(start=name, stream=' > '.join(order), config=dep.name, p=p, seed=seed,
                                     **replay(stream, n0, dep, lat, alpha, p, seed, head=head)))
    R = pd.DataFrame(rows)
    R['safe'] = (R.disagreement_after30 <= alpha + 0.01) & (R.drop_pp_after30 <= 1)
    R['goal'] = R.safe & (R.speedup >= 2)
    agg = dict(runs=('goal', 'size'), goal=('goal', 'sum'), safe=('safe', 'sum'),
               disagreement_after30_max=('disagreement_after30', 'max'), drop_pp_after30_max=('drop_pp_after30', 'max'),
               speedup_min=('speedup', 'min'), speedup_median=('speedup', 'median'))
    per = R.groupby(['start', 'stream', 'config', 'p'], sort=False).agg(**agg).reset_index()
    S = R.groupby(['start', 'p'], sort=False).agg(**agg).reset_index()
    say(f"\nPer start and stream order (p 0: without control; {seeds} seeds otherwise; after the first {head} frames "
        "of each sequence; speed-up predicted with the audits):")
    say(per.round(4).to_string(index=False))
    say("\nBoth orders pooled (goal, safe: counts of runs):")
    say(S.round(4).to_string(index=False))
    res = dict(date=datetime.datetime.now().isoformat(timespec='seconds'), torch=torch.__version__,
               python=platform.python_version(), threads=threads,
               network=dict(trained_on=train_seq, output_stride=net.config['output_stride'], unseen=list(unseen), size=list(SIZE)),
               settings=dict(alpha=alpha, ps=P, seeds=seeds, head=head, step='5 x span (step_size)', theta_min=0.,
                             max_exits=2),
               oracle=oracle.name, per_stream=json.loads(per.to_json(orient='records')),
               summary=json.loads(S.to_json(orient='records')), seconds=time.perf_counter() - t0)
    (out/'trust_starts.json').write_text(json.dumps(res, indent=1, default=float))
    (out/'trust_starts.txt').write_text('\n'.join(report) + '\n')
    say(f"\nwrote trust_starts.json and trust_starts.txt to {out.name}/ in {res['seconds'] / 60:.1f} min")
