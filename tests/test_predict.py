"Early-exit predictor invariants: exactness vs a full forward, nothing beyond the exit taken, nothing twice, thresholds."
import os
from collections import Counter
from pathlib import Path
import pytest, torch
from mess_fast.model import MESSNet, FINAL, parse_exit_key
from mess_fast.predict import *

EXITS = ['0:fcn-b0', '2:aspp-crm-b0', '4:fcn-b1', '6:fcn-b0']

@pytest.fixture(scope='module')
def net():
    torch.manual_seed(0)
    return MESSNet('resnet18', n_classes=6, output_stride=16, exits=EXITS + ['4:fcn-b0']).eval()

@pytest.fixture(scope='module')
def xb(): return torch.randn(7, 3, 48, 80, generator=torch.Generator().manual_seed(1))

def hooks(net):
    calls = Counter()
    mods = {f'stage{i}': s for i, s in enumerate(net.stages)} | {k: h.classifier for k, h in net.heads.items()} | {FINAL: net.final_head}
    hs = [m.register_forward_hook(lambda m, i, o, n=n: calls.update({n: 1, n + ':rows': i[0].shape[0]})) for n, m in mods.items()]
    return calls, hs

def spread_policy(net, full, exits, n, **kw):
    "Per-exit thresholds at batch medians, so images leave at several exits"
    tp = {k: float(pixel_confidence(full[k], kw.get('kind', 'top1')).median()) for k in exits}
    ti, rest = {}, torch.arange(n)
    for k in exits:
        if len(rest) == 0: ti[k] = 1.; continue   # every image has left: nobody exits here
        os_ = net.candidates[parse_exit_key(k)[0]].stride
        ic = ExitPolicy(tp, at='full', **kw).image_confidence(full[k][rest], k, os_)
        ti[k] = float(ic.sort().values[len(ic) // 2]); rest = rest[ic < ti[k]]
    return ExitPolicy(tp, ti, at='full', **kw)

@pytest.mark.parametrize('kw', [dict(edge=True), dict(edge=False), dict(edge=True, kind='entropy', s=1)])
def test_exact_and_minimal(net, xb, kw):
    with torch.no_grad(): full = net(xb)
    pol = spread_policy(net, full, EXITS, len(xb), **kw)
    pred = EarlyExitPredictor(net, EXITS, pol)
    calls, hs = hooks(net)
    try: r = pred.predict_batch(xb, logits=True)
    finally:
        for h in hs: h.remove()
    taken = Counter(r['exits'])
    assert len(taken) >= 3, taken
    for i, k in enumerate(r['exits']):
        torch.testing.assert_close(r['logits'][i], full[k][i], atol=1e-4, rtol=1e-4)
        assert torch.equal(r['masks'][i], full[k][i].argmax(0))
    # nothing twice; never the unchosen head; no stage beyond the deepest exit any image needed
    assert max(v for k, v in calls.items() if not k.endswith(':rows')) == 1
    assert '4:fcn-b0' not in calls
    deepest = max(pred.pos[k] for k in taken)
    assert all(f'stage{i}' not in calls for i in range(deepest + 1, len(net.stages)))
    # rows: each module saw exactly the images still in the batch
    left = len(xb)
    for k in pred.exits:
        if left == 0: assert k not in calls; continue
        assert calls[f'{k}:rows'] == left
        left -= taken[k]

@pytest.mark.parametrize('at', ['native', 'full'])
def test_first_and_final(net, xb, at):
    with torch.no_grad(): full = net(xb)
    calls, hs = hooks(net)
    r = EarlyExitPredictor(net, EXITS, ExitPolicy(0.5, 0., at=at)).predict_batch(xb)
    for h in hs: h.remove()
    assert r['exits'] == [EXITS[0]] * len(xb)
    assert set(k for k in calls if not k.endswith(':rows')) == {'stage0', EXITS[0]}
    assert torch.equal(r['masks'], full[EXITS[0]].argmax(1))
    r = EarlyExitPredictor(net, EXITS, ExitPolicy(1., 1., at=at)).predict_batch(xb)
    assert r['exits'] == [FINAL] * len(xb)
    assert torch.equal(r['masks'], full[FINAL].argmax(1))

@pytest.mark.parametrize('bad', [dict(th_img=1.01), dict(th_pix=-0.5), dict(th_pix={'0:fcn-b0': 2}), dict(th_img='x')])
def test_thresholds_rejected(bad):
    with pytest.raises(ValueError, match='must be a number in'): ExitPolicy(**bad)

def test_budgeted_every_exit(net, xb):
    pred = EarlyExitPredictor(net, EXITS)
    with torch.no_grad():
        for k in net.exit_keys:
            calls, hs = hooks(net)
            r = pred.predict_batch(xb, exit=k)
            for h in hs: h.remove()
            assert r['exits'] == [k] * len(xb)
            assert torch.equal(r['masks'], net.forward_exit(xb, k).argmax(1))
            pos = pred.pos[k]
            assert {c for c in calls if c.startswith('stage') and not c.endswith(':rows')} == {f'stage{i}' for i in range(pos + 1)}

def test_anytime(net, xb):
    pred = EarlyExitPredictor(net, EXITS)
    outs = list(pred.anytime(xb[:2]))
    assert [o['exit'] for o in outs] == EXITS + [FINAL]
    assert all(a['elapsed'] <= b['elapsed'] for a, b in zip(outs, outs[1:]))
    assert len(list(pred.anytime(xb[:2], deadline=0))) == 1

def test_bad_inputs(net):
    with pytest.raises(KeyError, match="'5:fcn-b0'"): EarlyExitPredictor(net, ['5:fcn-b0'])
    pred = EarlyExitPredictor(net, EXITS)
    with pytest.raises(ValueError, match=r'shape \(3, 32\)'): pred.predict_batch(torch.zeros(3, 32))
    with pytest.raises(ValueError, match='dls='): pred.predict('some.png')
    with pytest.raises(KeyError, match="'1:fcn-b0'"): pred.predict_batch(torch.zeros(1, 3, 32, 32), exit='1:fcn-b0')

def test_window_median_full_vs_bruteforce():
    c = torch.rand(1, 20, 24, generator=torch.Generator().manual_seed(3)); m = torch.zeros_like(c, dtype=torch.bool); m[0, ::3, ::5] = True
    res = window_median(c, m, 9, chunk=100)
    for _, i, j in m.nonzero().tolist():
        assert res[0, i, j] == c[0, max(0, i-4):i+5, max(0, j-4):j+5].flatten().median()

CAMVID = Path(os.environ.get('MESS_FAST_CAMVID', '/work/shared/data/camvid'))

@pytest.mark.skipif(not CAMVID.exists(), reason=f"shared CamVid not found at {CAMVID} (set MESS_FAST_CAMVID)")
def test_camvid_evaluate_and_report():
    from mess_fast.data import mess_dls
    dls = mess_dls(CAMVID, size=(64, 96), bs=4, max_items=8, augment=False, num_workers=0)
    torch.manual_seed(0)
    net = MESSNet('resnet18', n_classes=len(dls.vocab), output_stride=32, exits=['2:fcn-b0', '5:fcn-b0']).eval()
    pred = EarlyExitPredictor(net, ['2:fcn-b0', '5:fcn-b0'], ExitPolicy(0.5, 0.5), dls=dls)
    ev = pred.evaluate(dls.valid)
    assert sum(ev['hist'].values()) == len(dls.valid_ds) and 0 <= ev['miou'] <= 1 and ev['latency_ms'] > 0
    masks, ex, conf = pred.get_preds(dls.valid)
    assert masks.shape == (len(dls.valid_ds), 64, 96) and len(ex) == len(dls.valid_ds)
    img = dls.valid_ds.items[0][0]
    m, k, c = pred.predict(img)
    assert m.shape == (64, 96) and k in pred.exits and 0 <= c <= 1
    rep = policy_report(net, dls.valid, th_imgs=(0., 1.))
    assert list(rep['mode']) == ['full network', 'early exit', 'early exit']
    assert rep['hist'][1] == {'2:fcn-b0': len(dls.valid_ds)} and rep['hist'][2] == {FINAL: len(dls.valid_ds)}
