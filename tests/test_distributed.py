"""Distributed training on 2 CPU processes (gloo), tiny data: the same exit on every rank, identical replicas, confusion
matrices equal to a single-process evaluation of the saved network (also on a validation set the processes must pad),
a stage 2 that leaves the frozen part bitwise unchanged and out of DDP's gradient buckets, and a launcher that reports
failures and stops hung runs.

The 2-process run (tests/_ddp_worker.py) takes about a minute here; it fails clearly if it does not finish in RUN_TIMEOUT."""
from pathlib import Path
import pytest, torch

pytest.importorskip('accelerate')
from fastai.distributed import DistributedDL
from mess_fast.core import confusion, miou, plain
from mess_fast.loaders import mess_dls
from mess_fast.model import MESSNet, class_argmax
from mess_fast.train import mess_learner
from mess_fast.fixtures import tiny_dls
from mess_fast.distributed import distrib_launch, require_accelerate

HERE = Path(__file__).resolve().parent
WORKER = HERE/'_ddp_worker.py'
RUN_TIMEOUT = 900
import importlib.util
_spec = importlib.util.spec_from_file_location('_ddp_worker', WORKER)
W = importlib.util.module_from_spec(_spec); _spec.loader.exec_module(W)

@pytest.fixture(scope='module')
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp('ddp')
    try: res = distrib_launch(f"{WORKER}:run", 2, kwargs=dict(out=str(out)), timeout=RUN_TIMEOUT, threads=1)
    except TimeoutError as e: pytest.fail(f"the 2-process DDP run hung or was too slow: {e}")
    assert res == dict(world=2)
    recs = [torch.load(out/f'rank{r}.pt', weights_only=False) for r in range(2)]
    assert [r['rank'] for r in recs] == [0, 1]
    return out, recs

def test_ran_under_ddp(ranks):
    _, (r0, r1) = ranks
    for r in (r0, r1):
        assert [f['ddp'] for f in r['fits']] == [True, True] and all(f['world'] == 2 for f in r['fits'])
        assert [f['find_unused'] for f in r['fits']] == [True, False]   # needed by stage-1 sampling only

def test_same_exit_every_iteration(ranks):
    _, (r0, r1) = ranks
    # 16 training images, 2 ranks, batches of 4: 2 iterations per epoch and rank, 3 epochs
    assert len(r0['sampled']) == 3 * 2 and all(len(a) == 1 for a in r0['sampled'])
    assert r0['sampled'] == r1['sampled']
    # each rank started from its own random state (seed=None): without rank 0's state they would disagree

def test_replicas_identical_after_every_epoch(ranks):
    _, (r0, r1) = ranks
    assert [e['stage'] for e in r0['epochs']] == [1, 1, 1, 2, 2]
    assert r0['epochs'] == r1['epochs']                    # parameters and buffers (BatchNorm statistics) alike
    assert r0['stage1_final'] == r1['stage1_final']
    assert len({e['params'] for e in r0['epochs']}) == 5   # and training did move them
    assert r0['fits'][0]['best_epoch'] == r1['fits'][0]['best_epoch'] is not None

def test_broadcast_restored_after_the_context(ranks):
    "Under gloo, `distrib_ctx` replaces fastai's CUDA-only `DistributedDL._broadcast` for the context and restores it on exit"
    _, (r0, r1) = ranks
    for r in (r0, r1): assert r['broadcast'] == dict(replaced_inside=True, name_inside='_broadcast_on_pg_device', restored=True)

def test_distrib_ctx_in_one_process_changes_nothing():
    "Outside a multi-process launch the context is a no-op: the same model, no DDP wrapper, fastai's `_broadcast` untouched"
    require_accelerate()
    learn = mess_learner(tiny_dls(n=4, size=(32, 48), bs=2), positions=[2])
    orig, net, cbs = DistributedDL._broadcast, learn.model, list(learn.cbs)
    with learn.distrib_ctx() as l:
        assert l is learn and learn.model is net and DistributedDL._broadcast is orig
    assert DistributedDL._broadcast is orig and learn.model is net and list(learn.cbs) == cbs

def _reference_cms(net, dl, keys, void):
    "Single process, no fastai loop: the confusion matrix of every exit over `dl`"
    cms = {k: 0 for k in keys}
    net.eval()
    with torch.no_grad():
        for xb, yb in dl:
            out = net(plain(xb))
            for k in keys: cms[k] = cms[k] + confusion(class_argmax(out[k]), plain(yb), net.n_classes, void)
    return cms

@pytest.mark.parametrize('which,items', [('stage1_valid', W.TRAIN_ITEMS), ('stage1_odd', W.ODD_ITEMS)])
def test_metrics_equal_single_process(ranks, which, items):
    out, (r0, r1) = ranks
    dls = mess_dls(size=W.SIZE, bs=W.BS, max_items=items)
    assert len(dls.valid_ds) == items and r0['n_valid'] == W.TRAIN_ITEMS and r0['n_odd'] == W.ODD_ITEMS
    net = MESSNet.load(out/'stage1.pth')
    nthreads = torch.get_num_threads(); torch.set_num_threads(1)   # as in the processes, so the same kernels run
    try: ref = _reference_cms(net, dls.valid, r0[which]['keys'], dls.void_code)
    finally: torch.set_num_threads(nthreads)
    assert r0[which]['keys'] == net.exit_keys
    for k in net.exit_keys:
        assert torch.equal(r0[which]['cms'][k], r1[which]['cms'][k])                 # every rank reports the whole set
        assert int(r0[which]['cms'][k].sum()) == int((plain(torch.cat([y for _, y in dls.valid])) != dls.void_code).sum())
        assert torch.equal(r0[which]['cms'][k], ref[k].cpu()), k
    mious = r0[which]['values']                           # what fastai's `validate` reported, one mIoU per exit
    assert mious == pytest.approx([miou(ref[k], dls.void_code) for k in net.exit_keys], abs=1e-12)

def test_stage2_frozen_part_unchanged_heads_trained(ranks):
    _, (r0, r1) = ranks
    for r in (r0, r1):
        assert r['frozen_after'] == r['frozen_before'] == r0['frozen_before']   # bitwise, BatchNorm statistics included
        assert r['heads_after'] != r['heads_before']
        f2 = r['fits'][1]
        assert f2['bucket_bytes'] == f2['trainable_bytes'] > 0                 # only the heads are in DDP's gradient buckets
        assert f2['trainable_bytes'] < r['fits'][0]['trainable_bytes'] / 2
    assert r0['heads_after'] == r1['heads_after']
    for k in r0['stage2_valid']['keys']: assert torch.equal(r0['stage2_valid']['cms'][k], r1['stage2_valid']['cms'][k])

def test_launcher_reraises_rank0_error():
    with pytest.raises(ValueError, match='from the worker'):
        distrib_launch(f"{WORKER}:fail", 2, args=('from the worker',), timeout=300, threads=1, quiet=True)

def test_launcher_reraises_other_ranks_error():
    "When another rank fails first, the launcher stops rank 0 before it returns anything: the failing rank's exception comes back"
    with pytest.raises(ValueError, match='rank 1 only'):
        distrib_launch(f"{WORKER}:fail_on", 2, args=(1, 'rank 1 only'), timeout=300, threads=1, quiet=True)

def test_launcher_timeout_stops_every_process(tmp_path):
    import os, time
    with pytest.raises(TimeoutError, match='did not finish within 60 s'):
        distrib_launch(f"{WORKER}:sleep", 2, kwargs=dict(out=str(tmp_path)), timeout=60, threads=1, quiet=True)
    pids = [int(f.read_text()) for f in tmp_path.glob('pid*')]
    assert len(pids) == 2, "the processes did not start within the timeout; raise it on a slow machine"
    time.sleep(1)
    for pid in pids:
        with pytest.raises(ProcessLookupError): os.kill(pid, 0)
