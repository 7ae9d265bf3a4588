"""FaultTolerant's commit / roll back / heal logic and FTComm's refusals, on a stand-in for the torchft
Manager (one replica, so an all-reduce returns its input); the real Manager runs in
tests/distributed/test_ft_comm.py."""

from datetime import timedelta

import pytest
import torch

pytest.importorskip("torchft")

from commlab.comm import SimComm  # noqa: E402
from commlab.comm.ft import FaultTolerant, FTComm  # noqa: E402
from commlab.distributed.outer import DiLoCo  # noqa: E402


class Done:
    def wait(self, timeout=None):
        return True


class StandIn:
    """The part of torchft's Manager that FTComm uses: a world of one; ``commits`` are what
    should_commit answers in turn; ``heal_with[k]`` is loaded at quorum k (0-based)."""

    _use_async_quorum = False
    _timeout = timedelta(seconds=1)

    def __init__(self, commits=(), heal_with=None):
        self.commits, self.heal_with, self.step, self.fns, self.quorums = list(commits), heal_with or {}, 0, {}, 0

    def register_state_dict_fn(self, key, load, save):
        self.fns[key] = (load, save)

    def start_quorum(self, timeout=None):
        if self.quorums in self.heal_with:
            for load, _ in self.fns.values():
                load(self.heal_with[self.quorums])
        self.quorums += 1

    def num_participants(self):
        return 1

    def participating_rank(self):
        return 0

    def current_step(self):
        return self.step

    def errored(self):
        return None

    def allreduce(self, tensor, reduce_op=None):
        return Done()

    def should_commit(self):
        ok = self.commits.pop(0) if self.commits else True
        self.step += ok
        return ok


def diloco(comm):
    params = torch.randn(1, 6, generator=torch.Generator().manual_seed(0))
    return DiLoCo(comm, params, sync_every=3, sync_init=False, inner=lambda p: torch.optim.SGD([p], lr=0.1))


def gradient(params):
    return params.detach() - torch.arange(6.0)  # depends on the state only: a redone round is the same round


def test_a_failed_commit_rolls_back_to_the_last_committed_state_and_the_round_is_redone():
    comm = FTComm(StandIn(commits=[True, False, True, True]))
    method = diloco(comm)
    run = FaultTolerant(method, comm)
    oks = []
    for _ in range(12):
        before = method.state_dict()
        ok = run.step(gradient(method.params))
        oks.append(ok)
        if not ok:
            after = method.state_dict()
            assert after["steps"] == 3 and before["steps"] == 5
            assert torch.equal(after["global_params"], run.committed["global_params"])
    assert oks == [True, True, True, True, True, False, True, True, True, True, True, True]
    assert (run.commits, run.rollbacks, method.steps) == (3, 1, 9)
    reference = diloco(SimComm(1))
    for _ in range(9):
        reference.step(gradient(reference.params))
    assert torch.equal(method.params, reference.params)
    assert torch.equal(method.outer.buffer, reference.outer.buffer)
    assert comm.quorums == 5 and comm.world_size == 1  # the first, then one after each of the 4 syncs


def test_a_joiner_is_healed_at_a_quorum_with_a_peers_committed_state():
    peer = diloco(SimComm(1))
    for _ in range(6):
        peer.step(gradient(peer.params))
    comm = FTComm(StandIn(heal_with={0: peer.state_dict()}))
    method = diloco(comm)
    method.params.data.fill_(5.0)  # a fresh replica with other parameters
    run = FaultTolerant(method, comm)
    assert run.heals == 1 and method.steps == 6
    assert torch.equal(method.params, peer.params) and torch.equal(method.global_params, peer.global_params)
    for _ in range(3):
        run.step(gradient(method.params))
        peer.step(gradient(peer.params))
    assert torch.equal(method.params, peer.params) and torch.equal(method.outer.buffer, peer.outer.buffer)


def test_a_naive_joiner_keeps_its_own_state_when_sent_a_peers():
    peer = diloco(SimComm(1))
    for _ in range(6):
        peer.step(gradient(peer.params))
    comm = FTComm(StandIn(heal_with={0: peer.state_dict()}))
    method = diloco(comm)
    own = method.state_dict()
    run = FaultTolerant(method, comm, heal=False)
    assert (run.heals, run.ignored_heals) == (0, 1)
    assert method.steps == 0 and torch.equal(method.global_params, own["global_params"])
    assert not torch.equal(method.global_params, peer.global_params)
    assert torch.equal(run.committed["global_params"], own["global_params"])  # and rolls back to its own


def test_refusals():
    class Async(StandIn):
        _use_async_quorum = True

    with pytest.raises(ValueError, match="use_async_quorum=False"):
        FTComm(Async())
    comm = FTComm(StandIn())
    with pytest.raises(RuntimeError, match="no quorum yet"):
        comm.all_reduce(torch.zeros(1, 3))
    with pytest.raises(TypeError, match="FTComm"):
        FaultTolerant(diloco(SimComm(1)), SimComm(1))
    with pytest.raises(ValueError, match="built on this FTComm"):
        FaultTolerant(diloco(SimComm(1)), comm)
    with pytest.raises(TypeError, match="heal must be a bool"):
        FaultTolerant(diloco(comm), comm, heal="no")
    with pytest.raises(TypeError, match="cannot be pickled"):
        import pickle
        pickle.dumps(comm)
