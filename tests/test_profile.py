"Latency profile: composition of exit latencies, the policy's costs, JSON round trip, clear errors on mismatched or damaged profiles."
import json, warnings
import numpy as np, pytest, torch
from mess_fast.core import FINAL
from mess_fast.policy import ExitCosts
from mess_fast.fixtures import tiny_net
from mess_fast.profile import *

EXITS = ['1:fcn-b0', '3:fcn-crm-b0', '5:aspp-b0']

@pytest.fixture(scope='module')
def net(): return tiny_net(EXITS, n_classes=5)

@pytest.fixture(scope='module')
def prof(net): return profile_net(net, size=(48, 64), reps=3, warmup=1, progress=False)

def test_table(prof):
    t = prof.table
    assert set(t.kind) == {'segment', 'head', 'final', 'policy', 'upsample', 'decode', 'overhead'}
    assert (t.ms[t.kind.isin(['head', 'final', 'policy'])] > 0).all() and (t.ms[t.kind == 'segment'] >= 0).all() and (t.iqr_ms >= 0).all()
    sg = t[t.kind == 'segment']
    assert list(sg.key) == [f'segment{i}' for i in range(8)] and list(sg.pos) == list(range(8))
    assert prof.backbone_latency(7) == pytest.approx(sg.cum_ms.iloc[-1])
    assert sg.ms.to_numpy() == pytest.approx(np.diff(sg.cum_ms.to_numpy(), prepend=0.).clip(min=0))   # one segment: difference of chains
    assert set(t.key[t.kind == 'policy']) == set(EXITS + [FINAL])
    assert t[t.kind.isin(['segment', 'head', 'final'])].gflops.notna().all()
    assert prof.meta['size'] == [48, 64] and prof.meta['bs'] == 1 and prof.meta['threads'] == torch.get_num_threads()

def test_predict_latency_bruteforce(prof, net):
    "Expected latency = mean over images of what each one ran, composed piece by piece"
    ms = prof.table.set_index(['kind', 'key']).ms
    cum = prof.table.set_index(['kind', 'key']).cum_ms
    segments = lambda p: cum['segment', f'segment{p}'] + max(ms['overhead', 'predictor'], 0)   # the chain up to p, + overhead once
    chain, pos = ['1:fcn-b0', '5:aspp-b0', FINAL], [1, 5, 7]
    # each exit visited runs its head and, except the final one (no decision left to make), its policy check
    head = lambda k: ms['final' if k == FINAL else 'head', k] + (ms['policy', k] if k != FINAL else 0.)
    hist = {'1:fcn-b0': 3, '5:aspp-b0': 1, FINAL: 2}
    want = sum(n * (segments(pos[j]) + sum(head(chain[i]) for i in range(j + 1)) + ms['upsample', 'upsample'] + ms['decode', 'argmax'])
               for j, n in enumerate(hist.values())) / 6
    assert prof.predict_latency(['5:aspp-b0', '1:fcn-b0'], hist) == pytest.approx(want)
    assert prof.predict_latency(chain, [3, 1, 2]) == pytest.approx(want)
    assert prof.predict_latency([], {FINAL: 4}) == pytest.approx(prof.exit_latency(FINAL))
    # without the policy: the network truncated at the exit (budgeted mode), and what early exits add
    budgeted = lambda k, p: segments(p) + ms['final' if k == FINAL else 'head', k] + ms['upsample', 'upsample'] + ms['decode', 'argmax']
    for k, p in zip(EXITS + [FINAL], [1, 3, 5, 7]):
        assert prof.exit_latency(k) == pytest.approx(budgeted(k, p))
        if k != FINAL:
            assert prof.exit_latency(k, policy=True) == pytest.approx(budgeted(k, p) + ms['policy', k])
            assert prof.predict_latency([k], {k: 5}) == pytest.approx(prof.exit_latency(k, policy=True))
            assert prof.visit_latency(k) == pytest.approx(ms['head', k] + ms['policy', k])
            assert prof.visit_latency(k, policy=False) == pytest.approx(ms['head', k])
    # the same numbers as the policy's cost rule, in integer units (1 ns)
    c = prof.costs(EXITS + [FINAL])
    assert isinstance(c, ExitCosts) and c.kind == 'latency' and prof.costs().leave == c.leave
    assert c.leave == pytest.approx({k: prof.exit_latency(k, policy=True) for k in EXITS}) and c.final == prof.exit_latency(FINAL)
    assert c.visit == {k: prof.visit_latency(k) for k in EXITS} and c.budget == {k: prof.exit_latency(k) for k in EXITS + [FINAL]}
    assert c.backbone == {k: prof.backbone_latency(p) for k, p in zip(EXITS + [FINAL], [1, 3, 5, 7])}
    assert prof.predict_latency(chain, hist) == c.mean(['1:fcn-b0', '5:aspp-b0'], hist)
    with pytest.raises(KeyError, match=r"no rows for exits \['2:fcn-b0'\]"): prof.costs(['2:fcn-b0'])
    with pytest.raises(KeyError, match='not among the chosen'): prof.predict_latency(['1:fcn-b0'], {'5:aspp-b0': 1})
    with pytest.raises(ValueError, match='3 counts for 2 exits'): prof.predict_latency(['1:fcn-b0'], [1, 2, 3])
    with pytest.raises(ValueError, match='no image'): prof.predict_latency(['1:fcn-b0'], {FINAL: 0})
    s = prof.summary()
    assert list(s.key) == EXITS + [FINAL] and (s.policy_share < 1).all()
    assert s.latency_ms.tolist() == pytest.approx([prof.exit_latency(k) for k in EXITS + [FINAL]])
    cost = net.cost_table((48, 64)).set_index('key').cum_gflops   # GFLOPs of the network up to and including each exit
    assert s.set_index('key').gflops.to_dict() == pytest.approx(cost[EXITS + [FINAL]].to_dict())

def test_roundtrip_and_mismatch(prof, tmp_path):
    p = prof.save(tmp_path/'p.json')
    with pytest.raises(FileExistsError): prof.save(p)
    with warnings.catch_warnings():
        warnings.simplefilter('error')                      # same device, torch and threads: no warning
        q = LatencyProfile.load(p, size=(48, 64), bs=1)
    assert q.meta == prof.meta and list(q.table.columns) == list(prof.table.columns)
    for k in EXITS + [FINAL]:
        assert q.exit_latency(k) == pytest.approx(prof.exit_latency(k)) and q.exit_latency(k, True) == pytest.approx(prof.exit_latency(k, True))
    with pytest.raises(ValueError, match=r'input size \(48, 64\), not \(120, 160\)'): LatencyProfile.load(p, size=(120, 160))
    with pytest.raises(ValueError, match='batch size 1, not 4'): LatencyProfile.load(p, bs=4)
    d = json.loads(p.read_text()); d['meta']['threads'] += 3; d['meta']['device'] = 'cuda:Jetson'; p.write_text(json.dumps(d))
    with pytest.warns(UserWarning) as w: LatencyProfile.load(p)
    msgs = ' '.join(str(x.message) for x in w)
    assert 'threads' in msgs and 'cuda:Jetson' in msgs
    with warnings.catch_warnings():
        warnings.simplefilter('error')                      # device=None: the profile is read for another device on purpose
        LatencyProfile.load(p, device=None)
    with pytest.raises(ValueError, match='input size'): LatencyProfile.load(p, size=(120, 160), device=None)   # sizes are still checked
    (tmp_path/'bad.json').write_text('{"a": 1}')
    with pytest.raises(ValueError, match='bad.json is not a valid mess_fast latency profile'): LatencyProfile.load(tmp_path/'bad.json')
    with pytest.raises(FileNotFoundError, match='nope.json'): LatencyProfile.load(tmp_path/'nope.json')

def test_bad_input_shape():
    net = tiny_net((), n_classes=3)
    with pytest.raises(ValueError, match=r'expected \(1, 3, 32, 32\)'): profile_net(net, size=(32, 32), x=torch.zeros(2, 3, 32, 32), progress=False)

# ---------------------------------------------------------------- damaged files
@pytest.fixture(scope='module')
def profile_file(tmp_path_factory):
    p = tmp_path_factory.mktemp('prof')/'good.json'
    profile_net(tiny_net(['2:fcn-b0'], n_classes=3), (32, 32), reps=1, warmup=0, progress=False).save(p)
    return p

def _drop_meta(d): del d['meta']['n_candidates']; return d
def _drop_rows(d): del d['rows']; return d
def _half_rows(d): d['rows'] = d['rows'][:len(d['rows']) // 2]; return d
def _no_final(d): d['rows'] = [r for r in d['rows'] if r['key'] != 'final']; return d

@pytest.mark.parametrize('damage', ['binary', 'cut', 'meta', 'rows', 'half', 'final'])
def test_damaged_latency_profile(profile_file, tmp_path, damage):
    "Bug 11 (user report): binary: UnicodeDecodeError; missing fields: KeyError; truncated rows: loaded silently. Now a ValueError naming the file."
    LatencyProfile.load(profile_file)                        # the undamaged file loads
    p, text = tmp_path/'damaged.json', profile_file.read_text()
    if damage == 'binary': p.write_bytes(b'\x89PNG\r\n\x1a\n\x00\xff\xfe' * 50)
    elif damage == 'cut': p.write_text(text[:len(text) // 2])
    else: p.write_text(json.dumps(dict(meta=_drop_meta, rows=_drop_rows, half=_half_rows, final=_no_final)[damage](json.loads(text))))
    with pytest.raises(Exception) as e: LatencyProfile.load(p)
    assert type(e.value) is ValueError and str(p) in str(e.value) and 'not a valid mess_fast latency profile' in str(e.value), repr(e.value)
