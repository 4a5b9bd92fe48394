"Early-exit predictor invariants: exactness vs a full forward, nothing beyond the exit taken, nothing twice, thresholds, the caller's network left as it was."
import math
from collections import Counter
import numpy as np, pytest, torch
from mess_fast.core import FINAL
from mess_fast.model import MESSNet
from mess_fast.policy import ExitPolicy, pixel_confidence
from mess_fast.fixtures import tiny_net
from mess_fast.predict import *

EXITS = ['0:fcn-b0', '2:aspp-crm-b0', '4:fcn-b1', '6:fcn-b0']

@pytest.fixture(scope='module')
def net(): return tiny_net(EXITS + ['4:fcn-b0'], n_classes=6, output_stride=16)

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
        ic = ExitPolicy(tp, at='full', **kw)(full[k][rest], k, net.exit_stride(k))[1]
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
            c = pol(full[k][i:i+1], k, net.exit_stride(k))[1][0]     # (the batch there held other images)
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

def _camvid():
    from mess_fast.data import camvid_path
    try: return camvid_path()
    except FileNotFoundError as e: pytest.skip(f"full CamVid not found ({e})")

def test_camvid_evaluate_and_report():
    from mess_fast.loaders import mess_dls
    dls = mess_dls(_camvid(), size=(64, 96), bs=4, max_items=8, augment=False, num_workers=0)
    net = tiny_net(['2:fcn-b0', '5:fcn-b0'], n_classes=len(dls.vocab))
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

def test_bad_classes_and_input_tensors():
    "Bug 16 (user report): `MESSNet('resnet18', n_classes=0)` was accepted; wrongly shaped or typed tensors gave a raw convolution error"
    for n in (0, 1):
        with pytest.raises(ValueError, match='n_classes'): MESSNet('resnet18', n_classes=n)
    pred = EarlyExitPredictor(tiny_net(['2:fcn-b0'], n_classes=3))
    assert pred.predict_batch(torch.zeros(1, 3, 64, 96))['masks'].shape == (1, 64, 96)
    for bad, words in [(torch.zeros(2, 1, 64, 96), ['(2, 1, 64, 96)', '(B, 3, H, W)']), (torch.zeros(64, 96), ['(64, 96)']),
                       (torch.zeros(1, 64, 96, 3), ['(1, 64, 96, 3)']), (torch.zeros(1, 3, 64, 96, dtype=torch.uint8), ['uint8'])]:
        with pytest.raises((ValueError, TypeError)) as e: pred.predict_batch(bad)
        assert all(w in str(e.value) for w in words) and 'Expected' in str(e.value), str(e.value)

def test_caller_network_left_as_it_was(xb):
    "The predictor runs the caller's network itself on its device (no copy), in evaluation mode only during a call, and switches a training network back"
    net = tiny_net(EXITS, n_classes=6, output_stride=16).train()
    assert all(m.training for m in net.modules())
    pred = EarlyExitPredictor(net, EXITS, ExitPolicy(0.3, 0.5))
    assert pred.net is net and pred.device == torch.device('cpu') and net.training
    seen = []
    h = net.segments[0].register_forward_hook(lambda m, i, o: seen.append(m.training))
    try:
        r = pred.predict_batch(xb[:3])
        outs = list(pred.anytime(xb[:2]))
        ev = pred.evaluate(torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xb[:2], torch.zeros(2, 48, 80, dtype=torch.long)), batch_size=2))
        pred.get_preds(xb[:2])
    finally: h.remove()
    assert seen and not any(seen)                                  # evaluation mode while predicting ...
    assert all(m.training for m in net.modules())                  # ... and every module back in training mode after it
    with torch.no_grad():
        net.eval(); want = net(xb[:3]); net.train()
    for i, k in enumerate(r['exits']): assert torch.equal(r['masks'][i], want[k][i].argmax(0))
    assert len(outs) == len(EXITS) + 1 and ev['n'] == 2 and all(m.training for m in net.modules())
    # a network already in evaluation mode stays there; `evaluating` is the context manager behind it
    net.eval()
    pred.predict_batch(xb[:1])
    assert not any(m.training for m in net.modules())
    with evaluating(net.train()) as n2:
        assert n2 is net and not net.training
    assert net.training
    with pytest.raises(RuntimeError, match='boom'):
        with evaluating(net): raise RuntimeError('boom')
    assert net.training                                            # back also after an exception
    # another device: a copy runs there, the caller's network is not moved
    meta = torch.device('meta')
    other = EarlyExitPredictor(net, EXITS, device=meta)
    assert other.net is not net and next(other.net.parameters()).device == meta and next(net.parameters()).device == torch.device('cpu')
