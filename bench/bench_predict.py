"""Early-exit inference benchmark on the shared CamVid val split (batch size 1, training resolution).

1. profile the network on this device (`mess_fast.profile.profile_net`);
2. budgeted mode at each chosen exit: measured latency of `EarlyExitPredictor` over the val split vs the profile's
   `exit_latency`. The machine's speed drifts by several percent over minutes, so profile and measurement are
   interleaved in `runs` rounds (profile, then every exit once) and the ratio is taken within each round;
   the median ratio over rounds is reported with its range;
3. input-dependent mode at several `th_img`, with and without edge-aware correction: mIoU, mean latency,
   exit histogram, the profile's `predict_latency` for that histogram, ratios to the full network;
4. the exit policy's own cost as a share of each exit's latency.

Prints tables and writes bench/results/predict.json (and the profile beside it, predict_profile.json).  Run:  .venv/bin/python bench/bench_predict.py
"""
import json, time, datetime, os, sys
from pathlib import Path
import numpy as np, pandas as pd, torch, torch.nn.functional as F
from fastcore.script import call_parse
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))   # run from a checkout without installing
from mess_fast.model import MESSNet, FINAL, parse_exit_key
from mess_fast.data import mess_dls
from mess_fast.predict import ExitPolicy, EarlyExitPredictor, confusion, miou, _plain
from mess_fast.profile import profile_net


def quick_train(dls, size, epochs, out):
    "Fallback when no trained checkpoint exists: ResNet-18 OS16 with an fcn-b0 exit at every position, all exits' CE summed, from scratch"
    from fastai.learner import Learner
    import fastai.callback.schedule  # noqa: patches Learner.fit_one_cycle
    void = dls.void_code
    net = MESSNet('resnet18', n_classes=len(dls.vocab), output_stride=16)
    for p in range(len(net.candidates)): net.add_exit(p, 'fcn-b0')
    def loss(out, y):
        y = _plain(y).long()
        return sum(F.cross_entropy(o, y, ignore_index=void if void is not None else -100) for o in out.values())
    learn = Learner(dls, net, loss_func=loss)
    learn.fit_one_cycle(epochs, 2e-3)
    net.eval()
    if not out.exists(): net.save(out)
    return net

def head_mious(net, dl, void):
    "Budgeted mIoU of every exit (one full forward per batch computes all of them)"
    n = net.n_classes; cms = {k: torch.zeros(n, n, dtype=torch.long) for k in net.exit_keys}
    with torch.no_grad():
        for x, y in dl:
            out = net(_plain(x))
            for k, o in out.items(): cms[k] += confusion(o.argmax(1), _plain(y), n, void)
    return {k: miou(cm, void) for k, cm in cms.items()}

def lat_runs(pred, dl, runs, exit=None, void=None):
    "Evaluate `runs` times; per-image latencies pooled, mIoU/hist of the first run (deterministic)"
    res = [pred.evaluate(dl, exit=exit, void=void) for _ in range(runs)]
    return res[0], [r['latency_ms'] for r in res], [r['latency_median_ms'] for r in res], [r['policy_ms'] for r in res]

@call_parse
def main(model:str=str(HERE/'results'/'mess_r18.pth'), # Trained MESSNet checkpoint (MESSNet.save)
         data:str=os.environ.get('MESS_FAST_CAMVID', '/work/shared/data/camvid'), # CamVid folder (SegNet layout)
         height:int=120, # Input height (training resolution)
         width:int=160, # Input width
         threads:int=2, # torch threads
         exits:str='', # Chosen exit keys, comma-separated; default: the best head at 3 evenly spaced positions
         th_pix:float=0.9, # Pixel-confidence threshold
         th_imgs:str='0.5,0.7,0.8,0.9,0.95', # Image thresholds, comma-separated
         runs:int=5, # Rounds: interleaved profile + budgeted runs; repeated runs of each dynamic setting
         reps:int=30, # Timed repetitions per piece in the profile
         train_epochs:int=8, # Epochs of the fallback quick training when --model does not exist (0: untrained net)
         out:str=str(HERE/'results'/'predict.json'), # JSON results
        ):
    t0 = time.perf_counter()
    torch.set_num_threads(threads); torch.manual_seed(0)
    size = (height, width)
    dls = mess_dls(data, size=size, bs=8, augment=False, num_workers=0)
    void, vdl = dls.void_code, dls.valid
    print(f"val frames: {len(dls.valid_ds)}, size {size}, threads {torch.get_num_threads()}, void {void}")
    note, mpath = '', Path(model)
    if mpath.exists(): net = MESSNet.load(mpath).eval(); note = f"trained checkpoint {mpath}"
    elif train_epochs > 0:
        qp = HERE/'results'/'mess_r18_quick.pth'
        if qp.exists(): net = MESSNet.load(qp).eval(); note = f"{mpath} missing: reused the quick-trained fallback {qp}"
        else:
            print(f"{mpath} does not exist: quick-training a fallback network for {train_epochs} epochs (joint CE over all exits, from scratch)")
            net = quick_train(dls, size, train_epochs, qp)
            note = f"{mpath} missing: quick-trained fallback ({train_epochs} epochs, ResNet-18 OS16, fcn-b0 at every position, summed CE, from scratch), saved to {qp}"
    else:
        net = MESSNet('resnet18', n_classes=len(dls.vocab), output_stride=16, exits=[f'{p}:fcn-b0' for p in range(8)]).eval()
        note = f"{mpath} missing: UNTRAINED network (numbers for latency only; mIoU meaningless)"
    print(note); print(net)

    # 1. every head's budgeted mIoU (to choose exits) and the profile
    hm = head_mious(net, vdl, void)
    if exits: chosen = exits.split(',')
    else:
        npos = len(net.candidates)
        chosen = []
        for p in sorted({npos // 4, npos // 2, 3 * npos // 4}):
            ks = [k for k in net.heads if parse_exit_key(k)[0] == p]
            if ks: chosen.append(max(ks, key=hm.get))
    print('chosen exits:', chosen, {k: round(hm[k] * 100, 2) for k in chosen + [FINAL]})
    x1 = next(iter(dls.valid))[0][:1]

    # 2. budgeted mode at each chosen exit (+ final): measured vs profile, interleaved rounds
    keys, per = chosen + [FINAL], {k: [] for k in chosen + [FINAL]}
    pred = EarlyExitPredictor(net, chosen, ExitPolicy(th_pix, 0.8))
    for rnd in range(runs):
        prof = profile_net(net, size=size, bs=1, policy=ExitPolicy(th_pix, 0.8), x=_plain(x1), reps=reps, warmup=5)
        for k in keys:
            r = pred.evaluate(vdl, exit=k, void=void)
            per[k].append(dict(miou=r['miou'], med=r['latency_median_ms'], mean=r['latency_ms'], pol=r['policy_ms'],
                               pred=prof.exit_latency(k)))
        print(f"round {rnd}: " + ', '.join(f"{k} {per[k][-1]['med'] / per[k][-1]['pred']:.3f}" for k in keys))
    prof_path = Path(out).with_name(Path(out).stem + '_profile.json')
    prof.save(prof_path, overwrite=True)   # the last round's profile, used below
    print(prof.summary().round(4).to_string())
    bud = []
    for k in keys:
        m = pd.DataFrame(per[k]); ratios = m.med / m.pred
        bud.append(dict(exit=k, miou=m.miou.iloc[0], measured_ms=float(m.med.median()), measured_mean_ms=float(m['mean'].median()),
                        predicted_ms=float(m.pred.median()), ratio=float(ratios.median()), ratio_min=float(ratios.min()),
                        ratio_max=float(ratios.max()), policy_ms=float(m.pol.median()), policy_share=float((m.pol / m.med).median()),
                        gflops=float(prof.summary().set_index('key').gflops[k])))
    bud = pd.DataFrame(bud)
    print(f'\nBudgeted mode (batch size 1): measured median latency per image vs the profile, median of {runs} interleaved rounds')
    print(bud.round(4).to_string())
    full = bud.set_index('exit').loc[FINAL]

    # 3. dynamic mode: speed-accuracy curve, with and without edge-aware correction
    dyn = []
    for edge in (True, False):
        for t in [float(v) for v in th_imgs.split(',')]:
            pred = EarlyExitPredictor(net, chosen, ExitPolicy(th_pix, t, edge=edge))
            r, means, meds, pol = lat_runs(pred, vdl, runs, void=void)
            pl = prof.predict_latency(chosen, r['hist'])
            m = float(np.median(means))
            dyn.append(dict(edge=edge, th_pix=th_pix, th_img=t, miou=r['miou'], mean_ms=m, predicted_ms=pl, ratio_pred=m / pl,
                            miou_delta_pp=(r['miou'] - full.miou) * 100, speedup=full.measured_mean_ms / m,
                            policy_ms=float(np.median(pol)), hist=r['hist']))
    dyn = pd.DataFrame(dyn)
    print(f"\nInput-dependent mode, exits {chosen}; full network: mIoU {full.miou*100:.2f}, {full.measured_mean_ms:.2f} ms/image")
    print(dyn.round(4).to_string())
    el = time.perf_counter() - t0
    print(f"\ntotal {el:.0f} s")
    res = dict(created=datetime.datetime.now().isoformat(timespec='seconds'), note=note, model=str(mpath), size=list(size),
               threads=torch.get_num_threads(), torch=torch.__version__, n_val=len(dls.valid_ds), runs=runs,
               chosen_exits=chosen, head_miou=hm, profile=prof.meta, profile_summary=prof.summary().to_dict('records'),
               budgeted=bud.to_dict('records'), dynamic=dyn.to_dict('records'), seconds=el,
               command=' '.join(['.venv/bin/python'] + sys.argv))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(res, indent=1, default=str))
    print('wrote', out)
