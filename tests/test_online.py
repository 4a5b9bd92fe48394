"""Online risk control (issue 25): `RiskController` replayed exactly on synthetic caches whose later frames are harder
(a known shift), its state carried across a restart, and the same trace from the torch and ONNX runtimes."""
import numpy as np, pytest
from mess_fast.core import FINAL
from mess_fast.policy import RiskController
from mess_fast.cache import ExitConfig
from mess_fast.fixtures import synthetic_cache

CFG = ExitConfig(('1:fcn-b0', '3:fcn-b0'), (0.5, 0.5), (0.35, 0.35))

def realised(cache, trace):
    "Per frame: the disagreement with the final exit of the exit the frame took (known for every frame in a cache)"
    dis, idx = cache.disagreement(), {k: i for i, k in enumerate(cache.keys)}
    return np.array([dis[t['frame'], idx[t['exit']]] for t in trace])

@pytest.fixture(scope='module')
def shifted(): return synthetic_cache(n=1600, shift=800, drop=0.35, seed=3)

def test_no_audits_is_the_plain_rule(shifted):
    "p = 0: no audit, the offset never moves, and every frame takes the exit the uncontrolled rule gives (bitwise today's behaviour)"
    tr = shifted.replay(CFG, RiskController(alpha=0.05, p=0., seed=0))
    assert [t['exit'] for t in tr] == list(shifted.taken(CFG))
    assert not any(t['audited'] for t in tr) and {t['theta'] for t in tr} == {0.} and not any(t['flag'] for t in tr)

def test_control_brings_the_risk_back_after_a_shift(shifted):
    free = realised(shifted, shifted.replay(CFG, RiskController(alpha=0.05, p=0., seed=0)))
    before, after = free[:800].mean(), free[800:].mean()
    assert after > before + 0.05                                   # the shift: early answers got worse
    alpha = round((before + after) / 2, 3)                         # reachable: between the two regimes
    ctrl = RiskController(alpha=alpha, p=0.3, gamma=0.5, seed=0)
    tr = shifted.replay(CFG, ctrl)
    held = realised(shifted, tr)
    assert abs(held[1100:].mean() - alpha) < 0.03, (held[1100:].mean(), alpha)   # long after the shift: back at alpha
    assert free[1100:].mean() > alpha + 0.03                       # without control it stays above
    theta = np.array([t['theta'] for t in tr])
    assert theta[1100:].mean() > theta[300:800].mean() + 0.02      # the offset rose: fewer frames leave early
    flags = np.array([t['flag'] for t in tr])
    assert flags[800:].any() and not flags[:800].any(), np.flatnonzero(flags)[:5]   # it fires after the shift only ...
    assert not flags[-1] or not flags[800 + np.argmax(flags[800:]):].all()             # ... and clears once controlled
    audited = [t for t in tr if t['audited']]
    assert 0.25 < len(audited) / len(tr) < 0.35 and all(np.isnan(t['loss']) for t in tr if not t['audited'])

def test_audits_are_random_not_by_confidence(shifted):
    "The audit draw depends on the seed only: two configurations that exit differently are audited on the same frames"
    a = shifted.replay(CFG, RiskController(alpha=0.05, p=0.2, seed=7))
    b = shifted.replay(ExitConfig(('3:fcn-b0',), (0.9,), (0.8,)), RiskController(alpha=0.05, p=0.2, seed=7))
    assert [t['audited'] for t in a] == [t['audited'] for t in b]
    assert [t['exit'] for t in a] != [t['exit'] for t in b]

def test_state_survives_a_restart(shifted):
    "Saved and restored mid-stream (`to_dict`/`from_dict`, what `predict --state` writes), the controller continues exactly"
    one = RiskController(alpha=0.1, p=0.3, seed=4)
    whole = shifted.replay(CFG, one, range(0, 1000))
    first = RiskController(alpha=0.1, p=0.3, seed=4)
    shifted.replay(CFG, first, range(0, 600))
    again = RiskController.from_dict(first.to_dict())
    rest = shifted.replay(CFG, again, range(600, 1000))
    assert repr(rest) == repr(whole[600:])                           # repr: NaN (no confidence at the final exit) compares equal

@pytest.mark.parametrize('bad', [dict(alpha=0), dict(alpha=1.5), dict(p=-0.1), dict(p=2), dict(gamma=0), dict(theta=3)])
def test_bad_settings(bad):
    with pytest.raises(ValueError): RiskController(**bad)

def test_an_audited_frame_needs_its_loss():
    c = RiskController(p=1., seed=0)
    assert c.audit()
    with pytest.raises(ValueError, match='audit'): c.record('1:fcn-b0', 0.5)

def test_budgeted_configuration_has_nothing_to_control(shifted):
    with pytest.raises(ValueError, match='budgeted'): shifted.replay(ExitConfig(budget=FINAL), RiskController())
