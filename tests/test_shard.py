"""Sharding: replicas polling disjoint shares of the companies that together cover them all."""

from __future__ import annotations

from exporter.models import Company, CompanyMembership
from exporter.poller import Account, Poller, choose_targets, in_shard
from exporter.snapshot import CompanyTarget, Store


def memberships(count: int) -> list[CompanyMembership]:
    return [CompanyMembership(company=Company(company_handle=f"c|{i}", name=f"Company {i}")) for i in range(count)]


def test_shards_are_disjoint_and_cover_every_company():
    companies = memberships(500)
    for total in (1, 2, 3, 7):
        shards = [choose_targets("main", companies, [], (index, total))[0] for index in range(1, total + 1)]
        handles = [t.handle for shard in shards for t in shard]
        assert len(handles) == len(set(handles)) == 500
        assert all(len(shard) > 500 / total * 0.6 for shard in shards), [len(s) for s in shards]


HANDLES = ["c|110", "47", "111", "c|1", "c|2", "c|3", "c|4", "c|5", "acme", "j|x"]


def shard_of(handle: str, total: int) -> int:
    (index,) = [i for i in range(1, total + 1) if in_shard(handle, (i, total))]
    return index


def test_shard_of_a_company_is_the_same_in_every_process_and_release():
    # Replicas are separate processes: a salted hash() would give each its own answer. These
    # are the first 8 bytes of SHA-256 of the handle, modulo the total; changing them moves
    # every company to another replica on upgrade.
    assert [shard_of(h, 3) for h in HANDLES] == [1, 1, 1, 2, 1, 2, 2, 1, 1, 3]
    assert [shard_of(h, 7) for h in HANDLES] == [7, 1, 3, 6, 5, 2, 5, 3, 3, 7]


def test_same_name_companies_get_told_apart_and_inactive_ones_skipped():
    twins = [CompanyMembership(company=Company(company_handle=h, name="Twin")) for h in ("1", "2")]
    idle = CompanyMembership(company=Company(company_handle="3", name="Idle"), is_active=False)
    targets, unknown = choose_targets("main", [*twins, idle], [], None)
    assert sorted(t.label for t in targets) == ["Twin (1)", "Twin (2)"]
    assert unknown == []


def test_a_company_wanted_by_handle_and_by_name_is_one_target_under_its_name():
    targets, unknown = choose_targets("main", memberships(3), ["c|1", "Company 1", "c|2", "c|1"], None)
    assert [(t.handle, t.label) for t in targets] == [("c|1", "Company 1"), ("c|2", "Company 2")]
    assert unknown == []


async def test_discovery_schedules_only_the_companies_of_this_replica_s_shard():
    class Memberships:
        async def get_company_memberships(self) -> list[CompanyMembership]:
            return [CompanyMembership(company=Company(company_handle=h, name=h)) for h in ("c|1", "c|2", "c|3")]

    store = Store()
    poller = Poller([Account("main", Memberships())], store, interval=60, timeout=20,  # type: ignore[arg-type]
                    shard=(2, 3))
    poller.start()
    try:
        await poller._discover(CompanyTarget("main", "", "main"))
        assert [shard_of(h, 3) for h in ("c|1", "c|2", "c|3")] == [2, 1, 2]
        assert [c.target.handle for c in store.state.companies] == ["c|1", "c|3"]
    finally:
        await poller.stop()
