"Early-exit predictor invariants: exactness vs a full forward, nothing beyond the exit taken, nothing twice, thresholds."
import math
from collections import Counter
from pathlib import Path
import numpy as np, pytest, torch
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
    mods = {f'segment{i}': s for i, s in enumerate(net.segments)} | {k: h.classifier for k, h in net.heads.items()} | {FINAL: net.final_head}
    hs = [m.register_forward_hook(lambda m, i, o, n=n: calls.update({n: 1, n + ':rows': i[0].shape[0]})) for n, m in mods.items()]
    return calls, hs

def spread_policy(net, full, exits, n, **kw):
    "Per-exit thresholds at batch medians, so images leave at several exits"
    tp = {k: float(pixel_confidence(full[k], kw.get('kind', 'top1')).median()) for k in exits}
    ti, rest = {}, torch.arange(n)
    for k in exits:
        if len(rest) == 0: ti[k] = 1.; continue   # every image has left: nobody exits here
        ic = ExitPolicy(tp, at='full', **kw).image_confidence(full[k][rest], k, net.exit_stride(k))
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
    # nothing twice; never the unchosen head; no segment beyond the deepest exit any image needed
    assert max(v for k, v in calls.items() if not k.endswith(':rows')) == 1
    assert '4:fcn-b0' not in calls
    deepest = max(net.exit_pos(k) for k in taken)
    assert all(f'segment{i}' not in calls for i in range(deepest + 1, len(net.segments)))
    # the policy decided at every early exit some image reached, never at the final exit, and its confidences are the policy's
    assert set(pred.policy_calls) == {k for k in pred.exits[:-1] if calls[k]} and FINAL not in pred.policy_calls
    for i, k in enumerate(r['exits']):
        if k == FINAL: assert math.isnan(r['conf'][i])
        else:
            c = pol.image_confidence(full[k][i:i+1], k, net.exit_stride(k))[0]     # (the batch there held other images)
            assert abs(float(r['conf'][i]) - float(c)) < 1e-3 and r['conf'][i] >= np.float32(pol.thresholds(k)[1])
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
    assert set(k for k in calls if not k.endswith(':rows')) == {'segment0', EXITS[0]}
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
            r = pred.predict_batch(xb, exit_key=k)
            for h in hs: h.remove()
            assert r['exits'] == [k] * len(xb)
            assert torch.equal(r['masks'], net.forward_exit(xb, k).argmax(1))
            pos = net.exit_pos(k)
            assert {c for c in calls if c.startswith('segment') and not c.endswith(':rows')} == {f'segment{i}' for i in range(pos + 1)}
            assert {c for c in calls if not c.startswith('segment') and not c.endswith(':rows')} == {k}   # only that exit's head
            assert torch.isnan(r['conf']).all()                # no decision was made: the policy did not run
    assert not pred.policy_calls

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
    with pytest.raises(KeyError, match="'1:fcn-b0'"): pred.predict_batch(torch.zeros(1, 3, 32, 32), exit_key='1:fcn-b0')
    with pytest.raises(KeyError, match="'1:fcn-b0'"): EarlyExitPredictor(net, EXITS, budget='1:fcn-b0')
    with pytest.raises(KeyError, match=r"no threshold for exits \['2:aspp-crm-b0'\]"):
        EarlyExitPredictor(net, EXITS[:2], ExitPolicy({'0:fcn-b0': 0.5}, 0.5))
    with pytest.raises(ValueError, match='Duplicate'): EarlyExitPredictor(net, EXITS[:1] * 2)

def test_window_median_full_vs_bruteforce():
    c = torch.rand(1, 20, 24, generator=torch.Generator().manual_seed(3)); m = torch.zeros_like(c, dtype=torch.bool); m[0, ::3, ::5] = True
    res = window_median(c, m, 9, chunk=100)
    for _, i, j in m.nonzero().tolist():
        assert res[0, i, j] == c[0, max(0, i-4):i+5, max(0, j-4):j+5].flatten().median()

def _camvid():
    from mess_fast.data import camvid_path
    try: return camvid_path()
    except FileNotFoundError as e: pytest.skip(f"full CamVid not found ({e})")

def test_camvid_evaluate_and_report():
    from mess_fast.data import mess_dls
    dls = mess_dls(_camvid(), size=(64, 96), bs=4, max_items=8, augment=False, num_workers=0)
    torch.manual_seed(0)
    net = MESSNet('resnet18', n_classes=len(dls.vocab), output_stride=32, exits=['2:fcn-b0', '5:fcn-b0']).eval()
    pred = EarlyExitPredictor(net, ['2:fcn-b0', '5:fcn-b0'], ExitPolicy(0.5, 0.5), dls=dls)
    ev = pred.evaluate(dls.valid)
    assert sum(ev['hist'].values()) == len(dls.valid_ds) and 0 <= ev['miou'] <= 1 and ev['latency_ms'] > 0
    masks, ex, conf = pred.get_preds(dls.valid)
    assert masks.shape == (len(dls.valid_ds), 64, 96) and len(ex) == len(dls.valid_ds)
    img = dls.valid_ds.items[0][0]
    m, k, c = pred.predict(img)
    assert m.shape == (64, 96) and k in pred.exits and (0 <= c <= 1 if k != FINAL else math.isnan(c))
    rep = policy_report(net, dls.valid, th_imgs=(0., 1.))
    assert list(rep['mode']) == ['full network', 'early exit', 'early exit']
    assert rep['hist'][1] == {'2:fcn-b0': len(dls.valid_ds)} and rep['hist'][2] == {FINAL: len(dls.valid_ds)}

# ---------------------------------------------------------------- confidence, counts, policy settings
def test_pixel_confidence_in_float64():
    g = torch.Generator().manual_seed(5)
    lg = torch.randn(2, 12, 9, 11, generator=g) * 8
    c = pixel_confidence(lg)
    assert c.dtype == torch.float32 and torch.equal(c, lg.double().softmax(1).amax(1).float())
    p = lg.double().softmax(1)
    e = pixel_confidence(lg, 'entropy')
    assert e.dtype == torch.float32 and torch.equal(e, (1 - torch.special.entr(p).sum(1) / math.log(12)).float())
    assert torch.allclose(e.double(), 1 + (p * p.log()).nansum(1) / math.log(12), atol=1e-7)
    assert torch.equal(pixel_confidence(lg.half().float()), pixel_confidence(lg.half()))   # any input dtype: float64 inside
    with pytest.raises(ValueError, match='confidence kind'): pixel_confidence(lg, 'margin')

@pytest.mark.parametrize('kw', [dict(), dict(edge=False), dict(exclude=3), dict(at='full', kind='entropy')])
def test_policy_counts(kw):
    g = torch.Generator().manual_seed(6)
    lg = torch.randn(3, 5, 12, 16, generator=g) * 3
    pol = ExitPolicy(0.6, 0.5, **kw)
    ths = [0.3, 0.6, 0.9]
    ok, n = pol.counts(lg, ths, stride=4)
    conf, labels = pol.confidence_map(lg, 4)
    keep = labels != kw['exclude'] if 'exclude' in kw else torch.ones_like(labels, dtype=torch.bool)
    for j, t in enumerate(ths):
        assert torch.equal(ok[:, j], ((conf >= torch.tensor(t, dtype=torch.float32)) & keep).sum((1, 2)))
    assert torch.equal(n, keep.sum((1, 2))) and ok.dtype == n.dtype == torch.int64
    ic = pol.image_confidence(lg, 'any', 4)
    assert ic.dtype == torch.float32 and torch.equal(ic, ok[:, 1].float() / n.float())
    leave, c = pol(lg, 'any', 4)
    assert torch.equal(c, ic) and torch.equal(leave, ic >= torch.tensor(0.5, dtype=torch.float32))

def test_policy_to_dict_and_thresholds():
    pol = ExitPolicy({'0:fcn-b0': 0.7, '2:aspp-crm-b0': 0.8}, 0.6, edge=False, s=5, window=7, kind='entropy', at='full', exclude=11)
    d = pol.to_dict()
    import json
    assert ExitPolicy(**json.loads(json.dumps(d))) == pol and ExitPolicy(**d) != ExitPolicy()
    assert pol.thresholds('0:fcn-b0') == (0.7, 0.6) and pol.thresholds('9:fcn-b0') == (0.8, 0.6)   # unknown exit: the strictest
    assert pol.window_for(16) == 7 and ExitPolicy().window_for(16) == 5 and ExitPolicy(at='full').window_for(4) == 17
    for bad in [dict(kind='x'), dict(at='half'), dict(window=4), dict(s=2)]:
        with pytest.raises(ValueError): ExitPolicy(**bad)

# ---------------------------------------------------------------- budget mode, save/load, prediction on files
def test_budget_predictor(net, xb):
    pred = EarlyExitPredictor(net, EXITS, ExitPolicy(0., 0.), budget='2:aspp-crm-b0')
    assert 'budget' in repr(pred)
    r = pred.predict_batch(xb)
    with torch.no_grad(): want = net.forward_exit(xb, '2:aspp-crm-b0').argmax(1)
    assert r['exits'] == ['2:aspp-crm-b0'] * len(xb) and torch.equal(r['masks'], want) and torch.isnan(r['conf']).all()
    assert not pred.policy_calls
    r = pred.predict_batch(xb, exit_key='4:fcn-b1')                      # an explicit exit still wins
    assert r['exits'] == ['4:fcn-b1'] * len(xb)
    dl = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xb[:3], torch.zeros(3, 48, 80, dtype=torch.long)), batch_size=2)
    ev = pred.evaluate(dl)
    assert ev['hist'] == {'2:aspp-crm-b0': 3} and ev['exits'] == ['2:aspp-crm-b0'] * 3 and ev['n'] == 3

def test_predictor_save_load(net, xb, tmp_path):
    with torch.no_grad(): full = net(xb)
    pol = spread_policy(net, full, EXITS[:3], len(xb))
    pred = EarlyExitPredictor(net, EXITS[:3], pol)
    p = pred.save(tmp_path/'pred.pth')
    with pytest.raises(FileExistsError): pred.save(p)
    p2 = EarlyExitPredictor.load(p)
    assert p2.exits == pred.exits and p2.policy == pol and p2.budget is None
    assert list(p2.net.heads) == EXITS[:3]                                  # pruned to the chosen exits
    a, b = pred.predict_batch(xb), p2.predict_batch(xb)
    assert len(set(a['exits'])) >= 2 and a['exits'] == b['exits'] and torch.equal(a['masks'], b['masks'])
    assert torch.equal(a['conf'].nan_to_num(-1), b['conf'].nan_to_num(-1))
    full_keep = EarlyExitPredictor(net, EXITS[:1]).save(tmp_path/'keep.pth', prune=False)
    assert list(EarlyExitPredictor.load(full_keep).net.heads) == list(net.heads)
    bud = EarlyExitPredictor.load(EarlyExitPredictor(net, EXITS, budget='4:fcn-b1').save(tmp_path/'bud.pth'))
    assert bud.budget == '4:fcn-b1' and list(bud.net.heads) == ['4:fcn-b1']
    assert torch.equal(bud.predict_batch(xb)['masks'], EarlyExitPredictor(net, budget='4:fcn-b1').predict_batch(xb)['masks'])
    plain_net = net.save(tmp_path/'net.pth')
    with pytest.raises(ValueError, match='no deployed predictor'): EarlyExitPredictor.load(plain_net)

def test_predict_files_without_fastai(net, tmp_path):
    "A network that carries its input settings (net.meta['input']) predicts on image files through `prepare_image`"
    from PIL import Image
    from mess_fast.imaging import prepare_image, IMAGENET_MEAN, IMAGENET_STD
    rng = np.random.default_rng(0)
    files = []
    for i, (h, w) in enumerate([(60, 100), (97, 131), (48, 80)]):
        files.append(tmp_path/f'im{i}.png'); Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(files[-1])
    n2 = net.pruned(EXITS)
    n2.meta = dict(input=dict(size=[48, 80], mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD), codes=list('abcdef'), void=None))
    pred = EarlyExitPredictor(n2, EXITS, ExitPolicy(0.3, 0.5))
    xs = torch.from_numpy(np.stack([prepare_image(f, (48, 80)) for f in files]))
    want = pred.predict_batch(xs)
    masks, exits, conf = pred.get_preds(files)
    assert torch.equal(masks, want['masks']) and exits == want['exits']
    m, k, c = pred.predict(files[1])
    assert torch.equal(m, want['masks'][1]) and k == want['exits'][1]
