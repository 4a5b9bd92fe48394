"""Run in every process by tests/test_distributed.py (through `mess_fast.distributed.distrib_launch`): a tiny MESS stage 1
and stage 2 under `learn.distrib_ctx()`, written as a user would, plus a probe callback that records what the tests check.
Each rank writes its records to `<out>/rank<r>.pt`; rank 0 also saves the stage-1 network (`MESSNet.save` writes on rank 0 only)."""
import hashlib, os, time
from pathlib import Path
import torch, torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from fastai.callback.core import Callback
from fastai.torch_core import rank_distrib
from fastai.distributed import DistributedDL
from mess_fast.loaders import mess_dls
from mess_fast.train import mess_learner, unwrap_model, SaveBest

SIZE, BS = (48, 64), 4
TRAIN_ITEMS, ODD_ITEMS = 16, 15        # 16 validation images split evenly; 15 make DistributedDL pad one
VALID_EXITS = ['1:fcn-b0', '4:fcn-b0']
GRID, POSITIONS = ('fcn-b0', 'aspp-crm-b0'), [1, 3]

def digest(tensors)->str:
    h = hashlib.sha1()
    for t in tensors: h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()

def frozen_part(net): return list(net.segments.state_dict().values()) + list(net.final_head.state_dict().values())

class Probe(Callback):
    "Records, per rank: the exit sampled at every training iteration, DDP's settings, and digests of the network after every epoch"
    order = 0   # after `ExitSampler` (-5) has chosen the batch's exit
    def __init__(self): self.sampled, self.epochs, self.fits = [], [], []
    def before_train(self):
        m = self.learn.model
        if self.epoch == 0:
            info = dict(ddp=isinstance(m, DistributedDataParallel), world=dist.get_world_size() if dist.is_initialized() else 1)
            if info['ddp']:
                ld = m._get_ddp_logging_data()
                info.update(find_unused=bool(m.find_unused_parameters), bucket_bytes=int(ld['total_parameter_size_bytes']))
            info['trainable_bytes'] = sum(p.numel() * p.element_size() for p in unwrap_model(m).parameters() if p.requires_grad)
            self.fits.append(info)
    def before_batch(self):
        if self.training and self.learn.stage == 1: self.sampled.append(list(unwrap_model(self.learn.model).active))
    def after_epoch(self):
        net = unwrap_model(self.learn.model)
        self.epochs.append(dict(stage=self.learn.stage, params=digest(net.parameters()), buffers=digest(net.buffers())))
    def after_fit(self):
        sb = [c for c in self.learn.cbs if isinstance(c, SaveBest)]
        if sb and self.fits: self.fits[-1]['best_epoch'] = getattr(sb[0], 'best_epoch', None)

def cms_of(learn, dl=None)->dict:
    "DDP validation of every exit: fastai's `validate` with an `ExitMetric` per exit; the summed confusion matrices and the values"
    old = learn.metrics
    learn.metrics = mets = learn.exit_metrics()
    try: res = learn.validate(dl=dl)
    finally: learn.metrics = old
    return dict(cms={m.key: m.cm.clone() for m in mets}, values=[float(v) for v in res[1:]], keys=[m.key for m in mets])

def run(out:str, epochs1:int=3, epochs2:int=2):
    out = Path(out); rank = rank_distrib()
    dls = mess_dls(size=SIZE, bs=BS, max_items=TRAIN_ITEMS)
    odd = mess_dls(size=SIZE, bs=BS, max_items=ODD_ITEMS).valid
    learn = mess_learner(dls, seed=None, valid_exits=VALID_EXITS)   # seed None: each rank starts from a different random state
    probe = Probe()
    rec = dict(rank=rank, n_valid=len(dls.valid_ds), n_odd=len(odd.dataset))
    orig = DistributedDL._broadcast
    with learn.distrib_ctx():
        inside = DistributedDL._broadcast
        learn.fit_stage1(epochs1, save_best=True, cbs=[probe])
        rec['stage1_valid'], rec['stage1_odd'] = cms_of(learn), cms_of(learn, odd)
        rec['stage1_final'] = dict(params=digest(learn.net.parameters()), buffers=digest(learn.net.buffers()))
        learn.net.save(out/'stage1.pth')
        learn.to_stage2(GRID, POSITIONS)
        rec['frozen_before'], rec['heads_before'] = digest(frozen_part(learn.net)), digest(learn.net.heads.state_dict().values())
        learn.fit_stage2(epochs2, cbs=[probe])
        rec['frozen_after'], rec['heads_after'] = digest(frozen_part(learn.net)), digest(learn.net.heads.state_dict().values())
        rec['stage2_valid'] = cms_of(learn)
    # fastai's `_broadcast` (CUDA only) is replaced under gloo for the context, and put back after it
    rec['broadcast'] = dict(replaced_inside=inside is not orig, name_inside=inside.__name__, restored=DistributedDL._broadcast is orig)
    rec.update(sampled=probe.sampled, epochs=probe.epochs, fits=probe.fits)
    torch.save(rec, out/f'rank{rank}.pt')
    return dict(world=probe.fits[0]['world'])

def fail(msg:str):
    "A target that fails on every rank"
    raise ValueError(msg)

def fail_on(rank:int, msg:str, seconds:float=120):
    "A target that fails on `rank` only; the other ranks are still working (sleeping) when it does"
    if rank_distrib() == rank: raise ValueError(msg)
    time.sleep(seconds)

def sleep(out:str, seconds:float=600):
    "A target that outlives its timeout; each rank leaves its pid behind"
    Path(out, f"pid{rank_distrib()}").write_text(str(os.getpid()))
    time.sleep(seconds)
