"""Does MESS make the model a user already has faster at the same accuracy? torchvision's LR-ASPP MobileNetV3-Large,
plain vs its MESS version, same backbone, same data, same epochs, both from scratch.

Data: the full CamVid at 120x160, split by video sequence exactly as bench/common.py does (training on 0001TP and
0016E5; 0006R0 held out and cut in time into a calibration half, where training is watched and the search chooses,
and an evaluation half, where everything is reported).

1. Plain: `mess_learner(dls, arch='tv:lraspp_mobilenet_v3_large', positions=[])`, the converted model with no exit
   head: its stage 1 is the plain network's ordinary training (same loss, optimiser and one-cycle schedule).
2. MESS: the same model, stage 1 with one exit head sampled per iteration at every candidate but the last (the
   paper's), then stage 2 (frozen backbone and LR-ASPP head, `--grid` heads at every candidate, PFD).
3. The MESS network is profiled on this CPU (batch size 1), its exits cached on the calibration half and searched
   (up to `--max-exits` early exits); the paper's three targets are picked there.
4. Measured on the evaluation half, batch size 1, in interleaved rounds after one discarded warm-up round: the
   plain network, the MESS network's own final exit, and the three picks (mIoU, mean latency per image, exit histogram); also the search's exact
   predictions on the evaluation half (its cache).

Writes results/<model>.json (lraspp.json, deeplabv3_mbv3.json; and the .txt beside it: the printed tables); no local
paths, no progress bars.

    python bench/bench_lraspp.py [--model deeplabv3_mbv3]  # the full run: 30 plain + 30 MESS stage-1 epochs (LR-ASPP: 20-27 s each
        here), then stage 2 with 4 heads at all 14 candidates: 56 heads, the ASPP ones on stride 2-4 features; the first full
        run here had not finished its 8 stage-2 epochs after 55 min (sharing the cores with CI) and was stopped
    python bench/bench_lraspp.py --positions 3,6,9,12     # stage 2 at 4 candidates (16 heads): 35 min here
    python bench/bench_lraspp.py --model deeplabv3_mbv3 --positions 3,6,9,12   # 59 min here (43-44 s per stage-1 epoch)
    python bench/bench_lraspp.py --max-items 8 --epochs1 1 --epochs2 1 --reps 2 --rounds 1 --out lraspp_smoke   # a smoke test
"""
import json, time, datetime, platform
from dataclasses import replace
from pathlib import Path
import pandas as pd, torch
from fastcore.script import call_parse
from fastai.torch_core import set_seed
from mess_fast.core import FINAL, defaults
from mess_fast.loaders import mess_dls, labelled_dl
from mess_fast.train import mess_learner
from mess_fast.profile import profile_net
from mess_fast.cache import build_cache, ExitConfig
from mess_fast.search import search, measure
from common import RESULTS, HELD_OUT, camvid_split, rel

ARCHS = {'lraspp': 'tv:lraspp_mobilenet_v3_large', 'deeplabv3_mbv3': 'tv:deeplabv3_mobilenet_v3_large'}
LABELS = {'lraspp': 'LR-ASPP', 'deeplabv3_mbv3': 'DeepLabV3-MobileNetV3'}


def loaders(size, bs, max_items=None):
    "`(dls training on the training sequences and validating on the calibration half, calibration dl, evaluation dl)`"
    src, calib, evalp = camvid_split()
    if max_items: src, calib, evalp = src.subset(max_items), calib[:max_items], evalp[:max_items]
    dls = mess_dls(replace(src, valid=calib), size=size, bs=bs)
    return src, dls, labelled_dl(dls, calib, bs=8), labelled_dl(dls, evalp, bs=8)


def train(arch, dls, epochs1, lr1, positions=None, grid=None, epochs2=0, lr2=None, positions2=None):
    "A fixed-schedule run (no checkpoint chosen by validation score): seconds per epoch of each stage"
    set_seed(0, reproducible=True)
    learn = mess_learner(dls, arch=arch, positions=positions, seed=0)
    t = time.perf_counter()
    with learn.no_bar(), learn.no_logging(): learn.fit_stage1(epochs1, lr1)
    res = dict(stage1_s_per_epoch=(time.perf_counter() - t) / epochs1)
    if grid:
        learn.to_stage2(grid, positions2)
        t = time.perf_counter()
        with learn.no_bar(), learn.no_logging(): learn.fit_stage2(epochs2, lr2)
        res['stage2_s_per_epoch'] = (time.perf_counter() - t) / epochs2
    return learn, res


@call_parse
def main(model:str='lraspp',     # Which torchvision model: 'lraspp' (lraspp_mobilenet_v3_large) or 'deeplabv3_mbv3' (deeplabv3_mobilenet_v3_large)
         height:int=120,        # Input height
         width:int=160,         # Input width
         bs:int=8,              # Training batch size
         epochs1:int=30,        # Stage-1 epochs (the plain network's too)
         epochs2:int=8,         # Stage-2 epochs
         lr1:float=defaults.lr1, # Stage-1 (and plain) maximum learning rate
         lr2:float=defaults.lr2, # Stage-2 maximum learning rate
         grid:str=','.join(defaults.grid), # Stage-2 heads (at every candidate but the last, or at --positions)
         positions:str='',      # Stage-2 candidate positions, comma-separated; empty: all but the last
         max_exits:int=defaults.max_exits, # Search: at most this many early exits
         reps:int=30,           # Timed runs per piece when profiling
         rounds:int=5,          # Interleaved measurement rounds
         threads:int=2,         # torch threads
         max_items:int=None,    # Smoke test: at most this many frames per split
         out:str=str(RESULTS),  # Results folder
         overwrite:bool=False,  # Replace an existing <model>.json
        ):
    "Train the plain and the MESS model, search the MESS one, measure both; print tables; write <model>.json and <model>.txt"
    torch.set_num_threads(threads)
    if model not in ARCHS: raise SystemExit(f"--model: expected one of {list(ARCHS)}, got {model!r}")
    ARCH = ARCHS[model]
    out = Path(out); out.mkdir(parents=True, exist_ok=True)
    if not overwrite and (out/f'{model}.json').exists(): raise SystemExit(f"{out.name}/{model}.json exists: pass --overwrite")
    size, grid = (height, width), grid.split(',')
    src, dls, calib_dl, eval_dl = loaders(size, bs, max_items)
    report = []
    def say(*a):
        s = ' '.join(str(o) for o in a); print(s, flush=True); report.append(s)
    pd.set_option('display.width', 200); pd.set_option('display.max_colwidth', 90)
    say(f"{ARCH} from scratch on CamVid by sequence: train {src.sequences('train')} = {len(dls.train_ds)} frames; held out "
        f"{HELD_OUT}: {len(calib_dl.items)} calibration + {len(eval_dl.items)} evaluation frames; {size}, bs={bs}, "
        f"{epochs1}+{epochs2} epochs, {threads} threads" + (f"; SMOKE TEST (max_items={max_items})" if max_items else ''))
    res = dict(date=datetime.datetime.now().isoformat(timespec='seconds'), torch=torch.__version__, python=platform.python_version(),
               arch=ARCH, pretrained=False, size=list(size), bs=bs, epochs1=epochs1, epochs2=epochs2, lr1=lr1, lr2=lr2, grid=grid,
               threads=threads, max_items=max_items, split=dict(train_sequences=src.sequences('train'), held_out=HELD_OUT,
               n_train=len(dls.train_ds), n_calib=len(calib_dl.items), n_eval=len(eval_dl.items)))

    L = LABELS[model]
    say(f"\n== plain {L} (no exit head), stage-1 recipe ==")
    lp, tp = train(ARCH, dls, epochs1, lr1, positions=[])
    plain = lp.model.eval()
    res['plain'] = tp | dict(gflops=float(plain.cost_table(size).set_index('key').loc[FINAL, 'cum_gflops']))
    say(f"{tp['stage1_s_per_epoch']:.1f} s/epoch")

    say(f"\n== MESS {L}: stage 1 (one sampled exit per iteration), stage 2 (frozen network, every head at every candidate, PFD) ==")
    pos2 = [int(v) for v in positions.split(',') if v.strip()] or None
    res['stage2_positions'] = pos2
    lm, tm = train(ARCH, dls, epochs1, lr1, grid=grid, epochs2=epochs2, lr2=lr2, positions2=pos2)
    net = lm.model.eval()
    res['mess'] = tm | dict(n_candidates=len(net.candidates), n_heads=len(net.heads), final_taps=net.final_taps)
    say(f"stage 1 {tm['stage1_s_per_epoch']:.1f} s/epoch, stage 2 {tm['stage2_s_per_epoch']:.1f} s/epoch; "
        f"{len(net.candidates)} candidates, {len(net.heads)} heads; the final head taps positions {net.final_taps}")
    with lm.no_bar(): tab = lm.exit_table(eval_dl)
    res['mess']['exits_eval'] = json.loads(tab.reset_index().to_json(orient='records'))
    best = tab.drop(index=FINAL).sort_values('miou', ascending=False).groupby('pos').head(1).sort_values('pos')
    say("Best head per position, mIoU on the evaluation half:")
    say(pd.concat([best, tab.loc[[FINAL]]])[['pos', 'block', 'head', 'miou', 'gflops', 'rel_cost']].round(4).to_string())

    say("\n== profile, cache (calibration half), search ==")
    t = time.perf_counter(); prof = profile_net(net, size, reps=reps, progress=False); res['profile_s'] = time.perf_counter() - t
    cache, ecache = build_cache(net, calib_dl, progress=False), build_cache(net, eval_dl, progress=False)
    sr = search(cache, prof, max_exits=max_exits, progress=False)
    res['search'] = dict(n_configs=sr.n_configs, seconds=sr.seconds)
    say(f"{sr.n_configs:,} configurations in {sr.seconds:.1f} s")
    tg = sr.targets()

    say(f"\n== measured on the evaluation half, batch size 1, {rounds} interleaved rounds ==")
    base = cache.base_policy()
    preds = {f'plain {L}': ExitConfig(budget=FINAL).predictor(plain, base),
             'MESS final exit alone': ExitConfig(budget=FINAL).predictor(net, base)}
    preds |= {f'MESS: {t}': r.config.predictor(net, base) for t, r in tg.iterrows()}
    measure(preds, eval_dl, 1)   # warm-up round, discarded
    m = measure(preds, eval_dl, rounds)
    ref = m.loc[f'plain {L}']
    rows = []
    for (name, r), cfg in zip(m.iterrows(), [None, ExitConfig(budget=FINAL)] + list(tg.config)):
        row = dict(name=name, config=cfg.name if cfg else 'plain network', miou=r.miou, drop_vs_plain_pp=(ref.miou - r.miou) * 100,
                   latency_ms=r.latency_ms, speedup_vs_plain=ref.latency_ms / r.latency_ms,
                   hist=' '.join(f"{k}:{v}" for k, v in r['hist'].items()))
        if cfg is not None:
            c, e = sr.evaluate(cfg), ecache.evaluate(cfg)
            row |= dict(calib_pred_miou=c['miou'], calib_pred_latency_ms=c.get('latency'), eval_pred_miou=e['miou'])
        rows.append(row)
    tabm = pd.DataFrame(rows)
    res['measured'] = json.loads(tabm.to_json(orient='records'))
    res['latency_range_ms'] = {n: [float(r.latency_min), float(r.latency_max)] for n, r in m.iterrows()}
    say(tabm[['name', 'config', 'miou', 'drop_vs_plain_pp', 'latency_ms', 'speedup_vs_plain', 'hist']].round(4).to_string(index=False))
    ok = tabm[(tabm.name.str.startswith('MESS')) & (tabm.drop_vs_plain_pp <= 0.1)]
    best = ok.sort_values('latency_ms').iloc[0] if len(ok) else None
    res['answer'] = dict(fastest_mess_within_0_1pp_of_plain=None if best is None else best['name'],
                         speedup=None if best is None else float(best.speedup_vs_plain))
    say("\nFastest MESS configuration within 0.1 pp of the plain model's mIoU (measured): " +
        ("none" if best is None else f"{best['name']}: {best.speedup_vs_plain:.2f}x ({best.latency_ms:.2f} vs {ref.latency_ms:.2f} ms, "
                                     f"mIoU {best.miou:.4f} vs {ref.miou:.4f})"))
    (out/f'{model}.json').write_text(json.dumps(res, indent=1, default=float))
    (out/f'{model}.txt').write_text('\n'.join(report) + '\n')
    print(f"wrote {model}.json and {model}.txt to {rel(out) if out.resolve().is_relative_to(RESULTS.parent.parent) else out.name}/")
