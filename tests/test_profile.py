"Latency profile: composition of exit latencies, JSON round trip, clear errors on mismatched profiles."
import json, warnings
import pytest, torch
from mess_fast.model import MESSNet, FINAL
from mess_fast.profile import *

EXITS = ['1:fcn-b0', '3:fcn-crm-b0', '5:aspp-b0']

@pytest.fixture(scope='module')
def net():
    torch.manual_seed(0)
    return MESSNet('resnet18', n_classes=5, output_stride=32, exits=EXITS).eval()

@pytest.fixture(scope='module')
def prof(net): return profile_net(net, size=(48, 64), reps=3, warmup=1, progress=False)

def test_table(prof):
    t = prof.table
    assert set(t.kind) == {'stage', 'head', 'final', 'policy', 'upsample', 'decode', 'overhead'}
    assert (t.ms[t.kind.isin(['head', 'final', 'policy'])] > 0).all() and (t.ms[t.kind == 'stage'] >= 0).all() and (t.iqr_ms >= 0).all()
    st = t[t.kind == 'stage']; assert prof.backbone_latency(7) == pytest.approx(st.cum_ms.iloc[-1])
    assert set(t.key[t.kind == 'policy']) == set(EXITS + [FINAL])
    assert t[t.kind.isin(['stage', 'head', 'final'])].gflops.notna().all()
    assert prof.meta['size'] == [48, 64] and prof.meta['bs'] == 1 and prof.meta['threads'] == torch.get_num_threads()

def test_predict_latency_bruteforce(prof, net):
    "Expected latency = mean over images of what each one ran, composed piece by piece"
    ms = prof.table.set_index(['kind', 'key']).ms
    cum = prof.table.set_index(['kind', 'key']).cum_ms
    stages = lambda p: cum['stage', f'stage{p}'] + max(ms['overhead', 'predictor'], 0)   # the chain up to p, + overhead once
    chain, pos = ['1:fcn-b0', '5:aspp-b0', FINAL], [1, 5, 7]
    head = lambda k: ms['final' if k == FINAL else 'head', k] + ms['policy', k]
    hist = {'1:fcn-b0': 3, '5:aspp-b0': 1, FINAL: 2}
    want = sum(n * (stages(pos[j]) + sum(head(chain[i]) for i in range(j + 1)) + ms['upsample', 'upsample'] + ms['decode', 'argmax'])
               for j, n in enumerate(hist.values())) / 6
    assert prof.predict_latency(['5:aspp-b0', '1:fcn-b0'], hist) == pytest.approx(want)
    assert prof.predict_latency(chain, [3, 1, 2]) == pytest.approx(want)
    assert prof.predict_latency([], {FINAL: 4}) == pytest.approx(prof.exit_latency(FINAL))
    with pytest.raises(ValueError, match='3 counts for 2 exits'): prof.predict_latency(['1:fcn-b0'], [1, 2, 3])
    with pytest.raises(ValueError, match='no image'): prof.predict_latency(['1:fcn-b0'], {FINAL: 0})
    s = prof.summary()
    assert list(s.key) == EXITS + [FINAL] and (s.policy_share < 1).all()
    cost = net.cost_table((48, 64)).set_index('key').cum_gflops   # GFLOPs of the network up to and including each exit
    assert s.set_index('key').gflops.to_dict() == pytest.approx(cost[EXITS + [FINAL]].to_dict())

def test_roundtrip_and_mismatch(prof, tmp_path):
    p = prof.save(tmp_path/'p.json')
    with pytest.raises(FileExistsError): prof.save(p)
    q = LatencyProfile.load(p, size=(48, 64), bs=1)
    assert q.exit_latency('3:fcn-crm-b0') == pytest.approx(prof.exit_latency('3:fcn-crm-b0'))
    with pytest.raises(ValueError, match=r'input size \(48, 64\), not \(120, 160\)'): LatencyProfile.load(p, size=(120, 160))
    with pytest.raises(ValueError, match='batch size 1, not 4'): LatencyProfile.load(p, bs=4)
    d = json.loads(p.read_text()); d['meta']['threads'] += 3; d['meta']['device'] = 'cuda:Jetson'; p.write_text(json.dumps(d))
    with pytest.warns(UserWarning) as w: LatencyProfile.load(p)
    msgs = ' '.join(str(x.message) for x in w)
    assert 'threads' in msgs and 'cuda:Jetson' in msgs
    (tmp_path/'bad.json').write_text('{"a": 1}')
    with pytest.raises(ValueError, match='not a mess_fast latency profile'): LatencyProfile.load(tmp_path/'bad.json')
    with pytest.raises(FileNotFoundError, match='nope.json'): LatencyProfile.load(tmp_path/'nope.json')

def test_old_profile_without_chains(prof, tmp_path):
    "Profiles saved before chains and overhead were measured still load and sum their stages"
    p = prof.save(tmp_path/'p.json'); d = json.loads(p.read_text())
    d['rows'] = [{k: v for k, v in r.items() if k != 'cum_ms'} for r in d['rows'] if r['kind'] != 'overhead']
    p.write_text(json.dumps(d)); q = LatencyProfile.load(p)
    st = q.table[q.table.kind == 'stage']
    assert q.overhead() == 0 and q.backbone_latency(3) == pytest.approx(st.ms[st.pos <= 3].sum())

def test_bad_input_shape():
    net = MESSNet('resnet18', n_classes=3, output_stride=32).eval()
    with pytest.raises(ValueError, match=r'expected \(1, 3, 32, 32\)'): profile_net(net, size=(32, 32), x=torch.zeros(2, 3, 32, 32), progress=False)
