"Training invariants: PFD, loss equivalences, per-exit mIoU against torchmetrics, exit sampling, stage-2 freezing, export, files."
import os, subprocess, sys
from collections import Counter
import numpy as np, pytest, torch, torch.nn.functional as F
from fastai.callback.core import Callback
from fastai.learner import load_learner
from mess_fast.core import FINAL
from mess_fast.loaders import image_test_dl, input_meta
from mess_fast.losses import pfd_kl, pfd_mask, MultiExitLoss
from mess_fast.fixtures import tiny_dls
from mess_fast.metrics import *
from mess_fast.train import *

VOID = 11

@pytest.fixture(scope='module')
def dls(): return tiny_dls(n=12, size=(48, 64), augment=False)

def rand_out(seed=0, keys=('1:fcn-b0', '4:aspp-crm-b0'), n=12, b=3, h=10, w=12):
    g = torch.Generator().manual_seed(seed)
    out = {k: torch.randn(b, n, h, w, generator=g) for k in list(keys) + [FINAL]}
    return out, torch.randint(0, n, (b, h, w), generator=g)

def test_pfd_only_where_teacher_right():
    out, y = rand_out()
    s, t = out['1:fcn-b0'], out[FINAL]
    kl = pfd_kl(s, t, y, T=2., void=VOID, reduction='none')
    right = (t.argmax(1) == y) & (y != VOID)
    assert right.any() and (~right).any()
    assert (kl[~right] == 0).all()
    assert (kl[right] > 0).all()            # a random student differs from the teacher everywhere
    assert pfd_kl(t.clone(), t, y, void=VOID).abs() < 1e-6
    assert torch.equal(pfd_mask(t, y, VOID), right)
    # the mean is over non-void pixels
    torch.testing.assert_close(pfd_kl(s, t, y, void=VOID), kl.sum() / (y != VOID).sum())

def test_pfd_teacher_gets_no_gradient():
    out, y = rand_out()
    s = out['1:fcn-b0'].requires_grad_(); t = out[FINAL].requires_grad_()
    pfd_kl(s, t, y, void=VOID).backward()
    assert t.grad is None and s.grad.abs().sum() > 0
    s.grad = None    # stage-2 loss: the final exit is not trained and only the student gets gradients
    MultiExitLoss(VOID, distill=1., final_weight=0.)({'1:fcn-b0': s, FINAL: t}, y).backward()
    assert t.grad is None and s.grad.abs().sum() > 0

def test_loss_is_ce_without_distillation():
    out, y = rand_out(1)
    ce = sum(F.cross_entropy(o, y, ignore_index=VOID) for o in out.values())
    torch.testing.assert_close(MultiExitLoss(VOID)(out, y), ce)
    torch.testing.assert_close(MultiExitLoss(VOID, distill=0.)(out, y), ce)
    # teacher wrong everywhere -> the PFD term vanishes, whatever its weight
    wrong = {k: v.clone() for k, v in out.items()}
    wrong[FINAL] = F.one_hot((y + 1) % 11, 12).permute(0, 3, 1, 2).float() * 10
    ce_w = sum(F.cross_entropy(o, y, ignore_index=VOID) for o in wrong.values())
    torch.testing.assert_close(MultiExitLoss(VOID, distill=5.)(wrong, y), ce_w)
    # weights
    w = MultiExitLoss(VOID, weights={'1:fcn-b0': 0.}, final_weight=2.)(out, y)
    torch.testing.assert_close(w, 2 * F.cross_entropy(out[FINAL], y, ignore_index=VOID)
                               + F.cross_entropy(out['4:aspp-crm-b0'], y, ignore_index=VOID))

@pytest.mark.parametrize('bad', [dict(T=0), dict(T=-1), dict(distill=-0.1)])
def test_loss_rejects_bad_params(bad):
    with pytest.raises(ValueError): MultiExitLoss(VOID, **bad)

class _L:
    def __init__(self, pred, y): self.pred, self.y = pred, y

def test_miou_matches_torchmetrics():
    tm = pytest.importorskip('torchmetrics.classification')
    m, a = ExitMetric('1:fcn-b0', 'miou', VOID), ExitMetric('1:fcn-b0', 'acc', VOID)
    jac = tm.MulticlassJaccardIndex(12, average=None, ignore_index=VOID)
    acc = tm.MulticlassAccuracy(12, average='micro', ignore_index=VOID)
    m.reset(); a.reset()
    for s in range(4):
        out, y = rand_out(s)
        y[0, :3] = VOID
        out['1:fcn-b0'][:, 3] -= 100         # class 3 never predicted
        y[y == 7] = 0                       # class 7 never true
        for met in (m, a): met.accumulate(_L(out, y))
        p = out['1:fcn-b0'].argmax(1); jac.update(p, y); acc.update(p, y)
    per = jac.compute().numpy()
    present = np.array([c != VOID for c in range(12)])
    present[7] = True                       # predicted sometimes, never true: IoU 0 counts
    np.testing.assert_allclose(m.value, per[present].mean(), rtol=1e-6)
    np.testing.assert_allclose(a.value, float(acc.compute()), rtol=1e-6)

def test_metric_name_and_missing_exit():
    m = ExitMetric('3:fcn-b0', label='layer2.1/fcn-b0'); m.reset()
    m.accumulate(_L({FINAL: torch.zeros(1, 12, 2, 2)}, torch.zeros(1, 2, 2, dtype=torch.long)))
    assert m.value is None and m.name == 'miou layer2.1/fcn-b0'
    with pytest.raises(ValueError, match='kind'): ExitMetric(kind='f1')

def _count_heads(net):
    "Count the calls of every exit head (its classifier runs once per computation of the exit)"
    calls = Counter()
    hs = [h.classifier.register_forward_hook(lambda m, i, o, k=k: calls.update([k])) for k, h in net.heads.items()]
    return calls, hs

@pytest.mark.parametrize('mode', ['sample', 'all'])
def test_stage1_exit_sampling_one_fit(dls, mode):
    "One stage-1 fit: one sampled head per training batch ('sample') or all of them ('all'), none in validation"
    learn = mess_learner(dls, stage1=mode, seed=0)
    net, sampler = learn.model, learn.exit_sampler
    calls, hs = _count_heads(net)
    try: learn.fit_stage1(1, 1e-3)
    finally:
        for h in hs: h.remove()
    n_batches = len(dls.train)
    if mode == 'sample': assert sum(calls.values()) == n_batches and calls == Counter(sampler.counts)
    else: assert calls == Counter({k: n_batches for k in net.heads})
    assert net.active is None and not learn.cbs.filter(lambda c: isinstance(c, ExitSampler))   # a callback of the fit only

def test_exit_sampler_survives_a_fit(dls):
    learn = mess_learner(dls, positions=[2, 4], seed=0)
    sampler = learn.exit_sampler
    learn.fit_stage1(1, 1e-3)
    assert learn.exit_sampler is sampler

@pytest.mark.parametrize('mode', ['sample', 'all'])
def test_stage1_exit_sampling(dls, mode):
    "Two stage-1 fits: the sampling goes on in the second, and heads not sampled there do not move"
    learn = mess_learner(dls, stage1=mode, seed=0)
    net = learn.model
    calls, hs = _count_heads(net)
    learn.fit_stage1(1, 1e-3)
    before = {k: [p.clone() for p in h.parameters()] for k, h in net.heads.items()}
    learn.fit_stage1(1, 1e-3)      # second fit: heads trained in the first one have Adam state and zeroed grads
    for h in hs: h.remove()
    n_batches = len(dls.train)
    if mode == 'sample':
        assert sum(calls.values()) == 2 * n_batches        # one head per training batch, none in validation
        sampler = learn.exit_sampler
        assert isinstance(sampler, ExitSampler) and sampler.mode == 'sample'
        assert sum(sampler.counts.values()) == n_batches
        unsampled = [k for k in net.heads if k not in sampler.counts]
        assert unsampled
        for k in unsampled:   # a head not sampled in this fit does not move (no momentum, no weight decay)
            assert all(torch.equal(a, b) for a, b in zip(before[k], net.heads[k].parameters())), k
    else:
        assert calls == Counter({k: 2 * n_batches for k in net.heads})
    assert net.active is None                               # restored after fit
    assert not learn.cbs.filter(lambda c: isinstance(c, ExitSampler))   # a callback of each stage-1 fit only
    learn.to_stage2(['fcn-b0'], positions=[3])
    assert learn.exit_sampler is None

def test_stage2_leaves_backbone_and_final_bitwise(dls):
    learn = mess_learner(dls, seed=0)
    learn.fit_stage1(1, 1e-3)
    learn.to_stage2(['fcn-b0', 'fcn-crm-b1-rdi'], positions=[0, 3, 6])
    assert len(learn.model.heads) == 6
    sd0 = {k: v.clone() for k, v in learn.model.state_dict().items()}
    x, _ = dls.one_batch()
    learn.model.eval()
    with torch.no_grad(): ref = learn.model.forward_exit(x)
    learn.fit_stage2(1, 1e-2)
    sd1 = learn.model.state_dict()
    frozen = [k for k in sd0 if not k.startswith('heads.')]
    assert any(k.endswith('running_mean') for k in frozen)
    changed = [k for k in frozen if not torch.equal(sd0[k], sd1[k])]
    assert not changed, changed
    assert any(not torch.equal(sd0[k], sd1[k]) for k in sd0 if k.startswith('heads.'))   # the heads did train
    learn.model.eval()
    with torch.no_grad(): assert torch.equal(learn.model.forward_exit(x), ref)
    tab = learn.exit_table()
    assert list(tab.index) == learn.model.exit_keys
    cost = learn.model.cost_table((48, 64)).set_index('key')
    np.testing.assert_allclose(tab.gflops, cost.loc[tab.index, 'cum_gflops'])
    assert set(best_exits(tab, 2)) <= set(learn.model.heads)

def test_stage_order_errors(dls):
    learn = mess_learner(dls)
    with pytest.raises(RuntimeError, match='to_stage2'): learn.fit_stage2(1)
    learn.to_stage2(['fcn-b0'], positions=[2])
    with pytest.raises(RuntimeError, match='stage-1'): learn.fit_stage1(1)

def test_loss_goes_down_on_a_fixed_batch(dls):
    torch.manual_seed(0)
    learn = mess_learner(dls, stage1='all', positions=[1, 4])
    x, y = dls.one_batch()
    learn.create_opt(); net = learn.model.train()
    losses = []
    for _ in range(8):
        loss = learn.loss_func(net(x), y); loss.backward(); learn.opt.step(); learn.opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses

def test_export_round_trip(dls, tmp_path):
    learn = mess_learner(dls, seed=0, positions=[2, 5])
    learn.fit_stage1(1, 1e-3)
    dest = learn.export(tmp_path/'l.pkl')
    assert dest == tmp_path/'l.pkl'
    learn2 = load_learner(tmp_path/'l.pkl')
    assert isinstance(learn2, MESSLearner) and learn2.model.exit_keys == learn.model.exit_keys
    x, y = dls.one_batch()
    p1, _ = learn.get_preds(dl=[(x, y)]); p2, _ = learn2.get_preds(dl=[(x, y)])
    for k in p1: assert torch.equal(p1[k], p2[k])
    # the network file alone: never silently overwritten
    learn.model.save(tmp_path/'net.pth')
    with pytest.raises(FileExistsError): learn.model.save(tmp_path/'net.pth')

def test_mobilenet_learner_default_stride(dls):
    learn = mess_learner(dls, arch='mobilenet_v3_large', positions=[3, 9])
    assert learn.model.config['output_stride'] is None and learn.model.exit_keys == ['3:fcn-b0', '9:fcn-b0', FINAL]
    assert mess_learner(dls).model.config['output_stride'] == 16

class _EpochStates(Callback):
    "Record the weights after every epoch (before SaveBest restores anything)"
    order = SaveBest.order - 1
    def before_fit(self): self.states = []
    def after_epoch(self): self.states.append({k: v.detach().clone() for k, v in self.learn.model.state_dict().items()})

def test_save_best_without_metrics_or_epochs(dls, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    learn = mess_learner(dls, positions=[2], metrics=[], path=tmp_path/'learn')
    rec = _EpochStates()
    learn.fit_stage1(3, 3e-2, save_best=True, cbs=rec)      # no 'miou final' metric: monitors valid_loss
    losses = [float(v[1]) for v in learn.recorder.values]    # train_loss, valid_loss
    best = int(np.argmin(losses))
    sd = learn.model.state_dict()
    assert len(rec.states) == 3 and all(torch.equal(sd[k], rec.states[best][k]) for k in sd), (losses, best)   # the best epoch's weights, restored
    assert list(tmp_path.iterdir()) == []                   # kept in memory: no ./models, nothing under learn.path
    with pytest.warns(UserWarning, match='no epoch improved'): learn.fit_stage1(0, 1e-3, save_best=True)
    learn.to_stage2(['fcn-b0'], positions=[3])
    learn.fit_stage2(2, 1e-2, save_best=True, cbs=rec)
    losses = [float(v[1]) for v in learn.recorder.values]
    sd = learn.model.state_dict()
    assert all(torch.equal(sd[k], rec.states[int(np.argmin(losses))][k]) for k in sd)
    assert list(tmp_path.iterdir()) == []

def test_to_stage2_validates_before_changing_anything(dls):
    learn = mess_learner(dls, positions=[1, 2])
    keys = list(learn.model.heads)
    for grid, pos, msg in [(['fcn-b0'], [9], 'positions'), (['fcn-b0', 'fcn-b0'], [1], 'duplicate'), (['fcn-b7x'], [1], "'fcn-b7x'")]:
        with pytest.raises(ValueError, match=msg): learn.to_stage2(grid, pos)
        assert list(learn.model.heads) == keys and learn.stage == 1

def _pix_acc(inp, targ):
    "A user metric that knows nothing of exits: pixel accuracy of the final exit"
    return (inp[FINAL].argmax(1) == targ).float().mean()

def test_to_stage2_keeps_user_metrics(dls):
    learn = mess_learner(dls, seed=0, positions=[2, 5], valid_exits='all',
                         metrics=[_pix_acc, ExitMetric(FINAL, 'miou', VOID, 'final'), ExitMetric('2:fcn-b0', 'acc', VOID)])
    assert [m.name for m in learn.metrics] == ['_pix_acc', 'miou final', 'acc 2:fcn-b0']
    learn.to_stage2(grid=['fcn-b0'], positions=[1, 3])
    names = [m.name for m in learn.metrics]
    # the user's metrics of surviving exits stay, the stage-1 head's metric goes, each new head gets its mIoU once
    assert names == ['_pix_acc', 'miou final', 'miou layer1.1/fcn-b0', 'miou layer2.1/fcn-b0'], names
    learn.to_stage2(grid=['fcn-b0'], positions=[1], metrics=[_pix_acc])
    assert [m.name for m in learn.metrics] == ['_pix_acc']
    # 'auto' always scores the final exit, even when the user's metrics did not
    learn = mess_learner(dls, seed=0, positions=[2], metrics=[_pix_acc]).to_stage2(grid=['fcn-b0'], positions=[3])
    assert [m.name for m in learn.metrics] == ['_pix_acc', 'miou final', 'miou layer2.1/fcn-b0']
    # beyond 16 heads: one mean and one best column instead of a column per head
    learn = mess_learner(dls, seed=0, positions=[2])
    learn.to_stage2(grid=['fcn-b0', 'fcn-b1', 'aspp-b0'], positions=range(7))
    assert len(learn.model.heads) == 21
    assert [m.name for m in learn.metrics] == ['miou final', 'acc final', 'miou mean exit', 'miou best exit']
    learn.fit_stage2(1, 1e-3)
    v = learn.recorder.values[-1]   # train_loss, valid_loss, miou final, acc final, miou mean exit, miou best exit
    mean, best = float(v[4]), float(v[5])
    tab = learn.exit_table().drop(index=FINAL)
    assert mean == pytest.approx(tab.miou.mean(), abs=1e-6) and best == pytest.approx(tab.miou.max(), abs=1e-6)

def test_valid_exits_all(dls):
    learn = mess_learner(dls, seed=0, positions=[2, 5], valid_exits='all')
    assert [m.name for m in learn.metrics] == ['miou final', 'acc final', 'miou layer2.0/fcn-b0', 'miou layer3.1/fcn-b0']
    learn.fit_stage1(1, 1e-3)
    vals = [float(v) for v in learn.recorder.values[-1][2:]]
    assert len(vals) == 4 and all(0 <= v <= 1 for v in vals)
    with pytest.raises(KeyError, match="'3:fcn-b0'"): mess_learner(dls, positions=[2], valid_exits=['3:fcn-b0'])

def test_learner_predict_and_losses(dls):
    from PIL import Image
    learn = mess_learner(dls, seed=0, positions=[2, 5])
    img = dls.valid_ds.items[0][0]
    dec, lab, probs = learn.predict(img)
    dec2, lab2, probs2 = learn.predict(Image.open(img), exit_key='2:fcn-b0')
    assert lab.shape == lab2.shape == (48, 64) and probs.shape == (len(dls.vocab), 48, 64)
    assert dec.shape == (48, 64)
    with pytest.raises(FileNotFoundError, match='nope.png'): learn.predict('nope.png')
    # stage 1: the per-image loss includes the final exit and every exit computed (all of them outside fit)
    preds, targs, losses = learn.get_preds(with_loss=True)
    assert losses.shape == (len(dls.valid_ds),) and set(preds) == {'2:fcn-b0', '5:fcn-b0', FINAL}
    learn.model.eval()
    x, y = dls.valid.one_batch()
    with torch.no_grad(): o = learn.model(x)
    torch.testing.assert_close(losses[0], learn.loss_func({k: v[:1] for k, v in o.items()}, y[:1]), atol=1e-4, rtol=1e-4)
    assert learn.loss_func.reduction == 'mean'    # restored after get_preds
    # fastai's positional order of get_preds is kept; a shuffled or custom-ordered loader comes back in dataset order
    p1, t1, l1 = learn.get_preds(1, None, False, False, True)
    torch.testing.assert_close(l1, losses)
    _, t_sh = learn.get_preds(dl=dls.valid.new(shuffle=True))
    _, t_rev = learn.get_preds(dl=dls.valid.new(get_idxs=lambda: list(range(len(dls.valid_ds)))[::-1]))
    assert torch.equal(t_sh, targs) and torch.equal(t_rev, targs)
    # predict computes only the exit asked for: no other head, not the final one, no segment beyond it
    calls, hs = _count_heads(learn.model)
    hs.append(learn.model.final_head.register_forward_hook(lambda m, i, o: calls.update([FINAL])))
    hs += [s.register_forward_hook(lambda m, i, o, j=j: calls.update([j])) for j, s in enumerate(learn.model.segments)]
    try: _, lab5, probs5 = learn.predict(img, exit_key='5:fcn-b0')
    finally:
        for h in hs: h.remove()
    assert calls == Counter({'5:fcn-b0': 1, **{j: 1 for j in range(6)}}) and learn.model.active is None
    x1 = image_test_dl(dls, [img]).one_batch()[0]
    with torch.no_grad(): want = learn.model.forward_exit(x1, '5:fcn-b0')[0]
    assert torch.equal(lab5, want.argmax(0)) and torch.allclose(probs5, want.softmax(0))
    with pytest.raises(KeyError, match="'3:fcn-b0'"): learn.predict(img, exit_key='3:fcn-b0')

def test_loss_reduction_validated():
    out, y = rand_out(2)
    lf = MultiExitLoss(VOID)
    with pytest.raises(ValueError, match="reduction must be 'mean' or 'none'"): lf.reduction = 'sum'
    with pytest.raises(ValueError, match="reduction"): MultiExitLoss(VOID, reduction='sum')
    per = MultiExitLoss(VOID, reduction='none')(out, y)
    assert per.shape == (3,)
    n = (y != VOID).flatten(1).sum(1)
    want = sum(F.cross_entropy(o, y, ignore_index=VOID, reduction='none').flatten(1).sum(1) / n for o in out.values())
    torch.testing.assert_close(per, want)

def test_learner_records_input_meta(dls):
    learn = mess_learner(dls, positions=[2])
    assert learn.model.meta == dict(input=input_meta(dls))
    m = input_meta(dls)
    assert m['size'] == [48, 64] and m['codes'] == list(dls.vocab) and m['void'] == VOID and len(m['mean']) == len(m['std']) == 3

@pytest.mark.parametrize('lr', [0, -1e-3, float('nan'), float('inf'), 10., 'x', [1e-3, -1e-3]])
def test_bad_learning_rates(dls, lr):
    learn = mess_learner(dls, positions=[2])
    sd = {k: v.clone() for k, v in learn.model.state_dict().items()}
    with pytest.raises(ValueError, match='learning rate must be a positive number'): learn.fit_stage1(1, lr)
    with pytest.raises(ValueError, match='learning rate'): learn.fit_mess(1, 1, lr1=1e-3, lr2=lr)
    assert all(torch.equal(v, learn.model.state_dict()[k]) for k, v in sd.items())   # rejected before any training
    learn.to_stage2(['fcn-b0'], positions=[2])
    with pytest.raises(ValueError, match='learning rate'): learn.fit_stage2(1, lr)

def test_get_preds_without_early_exits(dls):
    "Bug 2 (user report): `learn.get_preds()` on `mess_learner(dls, positions=[])` failed with a KeyError"
    learn = mess_learner(dls, positions=[])
    assert learn.model.exit_keys == [FINAL]
    preds, targs = learn.get_preds()
    assert list(preds) == [FINAL] and preds[FINAL].shape == (len(dls.valid_ds), 12, 48, 64) and targs.shape == (len(dls.valid_ds), 48, 64)
    torch.testing.assert_close(preds[FINAL].sum(1), torch.ones(len(dls.valid_ds), 48, 64))   # probabilities
    _, _, dec = learn.get_preds(with_decoded=True)
    assert torch.equal(dec[FINAL], preds[FINAL].argmax(1))

def test_fit_mess_writes_nothing_to_the_working_directory(tmp_path, monkeypatch, dls):
    "Bug 9 (user report): `fit_mess` (save_best) wrote its checkpoints into ./models"
    monkeypatch.chdir(tmp_path)
    learn = mess_learner(dls, positions=[2])
    learn.fit_mess(1, 1, grid=['fcn-b0'], positions=[2])
    assert list(tmp_path.iterdir()) == []

def test_summary_with_the_readme_imports(tmp_path):
    "Bug 14 (user report): `learn.summary()` raised AttributeError unless `from fastai.vision.all import *` had run"
    code = ("from mess_fast.loaders import mess_dls; from mess_fast.train import mess_learner\n"
            "learn = mess_learner(mess_dls(size=(32, 48), bs=2, max_items=4), positions=[2])\n"
            "s = learn.summary()\nprint('SUMMARY', 'Total params' in str(s), 'MESSNet' in str(s))")
    env = {k: v for k, v in os.environ.items() if k != 'MESS_FAST_DATA'} | dict(MPLBACKEND='Agg', OMP_WAIT_POLICY='PASSIVE')
    r = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'SUMMARY True True' in r.stdout

def test_export_refuses_to_overwrite(tmp_path, dls):
    "Bug 17 (user report): `learn.export` silently overwrote an existing file"
    learn = mess_learner(dls, positions=[2], path=tmp_path)
    learn.export('learner.pkl')
    before = (tmp_path/'learner.pkl').read_bytes()
    with pytest.raises(FileExistsError, match='learner.pkl'): learn.export('learner.pkl')
    assert (tmp_path/'learner.pkl').read_bytes() == before
    (tmp_path/'other.pkl').write_text('keep me')
    with pytest.raises(FileExistsError): learn.export(tmp_path/'other.pkl')
    assert (tmp_path/'other.pkl').read_text() == 'keep me'
    learn.export('learner.pkl', overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['learner.pkl', 'other.pkl']

def test_export_with_a_relative_path(tmp_path, dls, monkeypatch):
    "Issue 23.3: `MESSLearner.export` joined a relative `learn.path` twice (`Parent directory exp/exp does not exist`)"
    from pathlib import Path
    monkeypatch.chdir(tmp_path)
    (tmp_path/'exp').mkdir()
    learn = mess_learner(dls, positions=[2])
    learn.path = Path('exp')
    learn.export('learner.pkl')
    assert sorted(p.name for p in tmp_path.rglob('*')) == ['exp', 'learner.pkl'] and (tmp_path/'exp'/'learner.pkl').stat().st_size > 0
