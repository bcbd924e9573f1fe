"""Tests for pinsage_ray.data.synthetic: determinism, planted structure, Parquet round trip."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pinsage_ray.data import SyntheticConfig, generate_synthetic, read_synthetic, write_synthetic
from pinsage_ray.data.synthetic import BLOCK_GROUPS, fine_coarse_config

BASE = dict(num_items=4000, num_groups=3000, num_communities=10, mean_group_size=10.0, seed=7)


@pytest.fixture(scope="module")
def dataset():
    return generate_synthetic(SyntheticConfig(**BASE, timestamps=True))


def _arrays(ds):
    items = ds.interactions["item"].to_numpy()
    groups = ds.interactions["group"].to_numpy()
    community = ds.item_labels["label"].to_numpy()
    home = ds.extra["group_labels"]["label"].to_numpy()
    return items, groups, community, home


def _features(ds) -> np.ndarray:
    return np.stack(ds.item_features["features"].to_numpy(zero_copy_only=False))


def test_schema_and_ids(dataset):
    inter = dataset.interactions
    assert dataset.name == "synthetic"
    assert inter.schema == pa.schema([("item", pa.int64()), ("group", pa.int64()), ("timestamp", pa.int64())])
    items, groups, community, home = _arrays(dataset)
    assert items.min() >= 0 and items.max() < BASE["num_items"]
    assert groups.min() >= 0 and groups.max() < BASE["num_groups"]
    assert dataset.item_labels["item"].to_pylist() == list(range(BASE["num_items"]))
    assert dataset.extra["group_labels"]["group"].to_pylist() == list(range(BASE["num_groups"]))
    assert np.bincount(community).min() >= BASE["num_items"] // BASE["num_communities"]
    # Community ids are shuffled over item ids, not contiguous blocks.
    assert (np.diff(community) != 0).mean() > 0.5
    assert len(np.unique(groups * BASE["num_items"] + items)) == len(items), "duplicate (group, item) edge"
    feats = _features(dataset)
    assert feats.dtype == np.float32 and feats.shape == (BASE["num_items"], 32)


def test_deterministic_by_seed(dataset):
    again = generate_synthetic(SyntheticConfig(**BASE, timestamps=True))
    assert again.interactions.equals(dataset.interactions)
    assert again.item_features.equals(dataset.item_features)
    assert again.item_labels.equals(dataset.item_labels)
    other = generate_synthetic(SyntheticConfig(**{**BASE, "seed": 8}, timestamps=True))
    assert not other.interactions.equals(dataset.interactions)
    assert not other.item_labels.equals(dataset.item_labels)


def test_every_item_has_an_edge_and_coverage_edges_go_home(dataset):
    items, groups, community, home = _arrays(dataset)
    assert np.bincount(items, minlength=BASE["num_items"]).min() >= 1
    n_cov = dataset.extra["num_coverage_edges"]
    assert n_cov > 0  # Zipf tail leaves some items undrawn at this size
    cov_items, cov_groups = items[-n_cov:], groups[-n_cov:]
    assert len(np.unique(cov_items)) == n_cov
    np.testing.assert_array_equal(community[cov_items], home[cov_groups])
    assert np.bincount(items[:-n_cov], minlength=BASE["num_items"])[cov_items].max() == 0


@pytest.mark.parametrize("p_in", [0.8, 0.4])
def test_home_fraction_matches_p_in(p_in):
    ds = generate_synthetic(SyntheticConfig(**{**BASE, "p_in": p_in}))
    items, groups, community, home = _arrays(ds)
    per_group = np.bincount(groups, weights=community[items] == home[groups]) / np.bincount(groups)
    expected = p_in + (1 - p_in) / BASE["num_communities"]  # random draws can hit home too
    assert abs(per_group.mean() - expected) < 0.05, (per_group.mean(), expected)


def test_p_in_one_is_pure():
    ds = generate_synthetic(SyntheticConfig(**{**BASE, "p_in": 1.0, "num_groups": 500}))
    items, groups, community, home = _arrays(ds)
    np.testing.assert_array_equal(community[items], home[groups])


def test_items_sharing_groups_share_communities(dataset):
    items, groups, community, _ = _arrays(dataset)
    same_group = groups[1:] == groups[:-1]  # consecutive edges of one group = co-occurring items
    same_comm = community[items[1:]] == community[items[:-1]]
    assert same_comm[same_group].mean() > 0.6  # chance is 1 / num_communities = 0.1
    assert same_comm[~same_group].mean() < 0.3


def test_group_sizes_and_item_degrees_heavy_tailed(dataset):
    items, groups, _, _ = _arrays(dataset)
    sizes = np.bincount(groups)
    assert 0.7 * BASE["mean_group_size"] < sizes.mean() < 1.1 * BASE["mean_group_size"]
    assert sizes.max() > 5 * np.median(sizes)
    degree = np.bincount(items)
    assert degree.max() > 20 * np.median(degree)
    top = np.sort(degree)[::-1]
    assert top[: len(top) // 100].sum() > 0.1 * top.sum()  # top 1% of items hold >10% of edges


def test_features_recover_communities(dataset):
    feats = _features(dataset)
    community = dataset.item_labels["label"].to_numpy()

    def nearest_centroid_accuracy(f):
        train = np.arange(len(f)) % 2 == 0
        cent = np.stack([f[train & (community == c)].mean(0) for c in range(BASE["num_communities"])])
        d = ((f[~train, None, :] - cent[None]) ** 2).sum(-1)
        return (d.argmin(1) == community[~train]).mean()

    chance = 1 / BASE["num_communities"]
    assert nearest_centroid_accuracy(feats) > 2.2 * chance  # default noise 1.0: ~0.32
    clean = generate_synthetic(SyntheticConfig(**BASE, feature_noise=0.25))
    assert nearest_centroid_accuracy(_features(clean)) > 0.9


def test_timestamps_increase_within_group(dataset):
    groups = dataset.interactions["group"].to_numpy()
    ts = dataset.interactions["timestamp"].to_numpy()
    order = np.argsort(groups, kind="stable")  # file order within each group
    g, t = groups[order], ts[order]
    assert np.all(np.diff(t)[np.diff(g) == 0] > 0)
    plain = generate_synthetic(SyntheticConfig(**BASE))
    assert plain.interactions.column_names == ["item", "group"]
    # Same edges with or without timestamps.
    assert plain.interactions.equals(dataset.interactions.drop_columns(["timestamp"]))


def test_no_features():
    ds = generate_synthetic(SyntheticConfig(**{**BASE, "num_groups": 200}, feature_dim=0))
    assert ds.item_features is None and ds.item_labels.num_rows == BASE["num_items"]


def test_write_round_trip(dataset, tmp_path):
    config = SyntheticConfig(**BASE, timestamps=True)
    out = tmp_path / "syn"
    summary = write_synthetic(config, out, chunk_groups=1000)
    assert summary["num_interactions"] == dataset.interactions.num_rows
    assert summary["num_coverage_edges"] == dataset.extra["num_coverage_edges"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["syn"], "temporary folder left behind"
    meta = pq.ParquetFile(summary["paths"]["interactions"]).metadata
    n_chunks = -(-BASE["num_groups"] // BLOCK_GROUPS)  # 1000 rounds up to one 1024-group block
    assert meta.num_row_groups == n_chunks + 1  # + the coverage row group
    assert pq.read_table(out / "interactions.parquet").equals(dataset.interactions)
    assert pq.read_table(out / "item_features.parquet").equals(dataset.item_features)
    assert pq.read_table(out / "item_labels.parquet").equals(dataset.item_labels)
    back = read_synthetic(out)
    assert back.extra["group_labels"].equals(dataset.extra["group_labels"])
    assert json.loads((out / "summary.json").read_text())["config"]["seed"] == BASE["seed"]

    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_synthetic(config, out)
    big_chunks = write_synthetic(config, out, chunk_groups=10**6, overwrite=True)
    assert pq.ParquetFile(big_chunks["paths"]["interactions"]).metadata.num_row_groups == 2
    assert pq.read_table(out / "interactions.parquet").equals(dataset.interactions)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("num_items", 0, r"SyntheticConfig\.num_items=0 is invalid: pass an int >= 1"),
        ("num_groups", 2.5, r"SyntheticConfig\.num_groups=2\.5 is invalid: pass an int"),
        ("num_communities", 5000, r"num_communities=5000 .*at most num_items=4000"),
        ("mean_group_size", 0.5, r"mean_group_size=0\.5 .*\[1, num_items=4000\]"),
        ("p_in", 1.5, r"SyntheticConfig\.p_in=1\.5 is invalid: pass a probability in \[0, 1\]"),
        ("popularity_exponent", -1.0, r"popularity_exponent=-1\.0"),
        ("feature_dim", -3, r"feature_dim=-3 .*>= 0"),
        ("feature_noise", float("nan"), r"feature_noise=nan"),
        ("seed", -1, r"seed=-1 .*>= 0"),
        ("timestamps", "yes", r"timestamps='yes' .*True or False"),
        ("num_fine_per_coarse", -1, r"num_fine_per_coarse=-1 .*>= 0"),
        ("num_fine_per_coarse", 401, r"num_fine_per_coarse=401 .*4010 exceeds num_items=4000"),
        ("num_fine_per_coarse", 2.0, r"num_fine_per_coarse=2\.0 is invalid: pass an int"),
    ],
)
def test_config_validation(field, value, message):
    with pytest.raises(ValueError, match=message):
        SyntheticConfig(**{**BASE, field: value})


def test_write_rejects_bad_chunk_groups(tmp_path):
    with pytest.raises(ValueError, match="chunk_groups=0"):
        write_synthetic(SyntheticConfig(**{**BASE, "num_groups": 10}), tmp_path / "x", chunk_groups=0)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------- two levels (fine / coarse)
TWO = dict(BASE, num_communities=4, num_fine_per_coarse=5, p_in=0.8)  # 20 fine of 200 items


@pytest.fixture(scope="module")
def two_level():
    return generate_synthetic(SyntheticConfig(**TWO, timestamps=True))


def test_two_level_labels(two_level):
    labels = two_level.item_labels
    assert labels.schema == pa.schema([("item", pa.int64()), ("label", pa.int64()), ("coarse", pa.int64())])
    fine, coarse = labels["label"].to_numpy(), labels["coarse"].to_numpy()
    np.testing.assert_array_equal(coarse, fine // TWO["num_fine_per_coarse"])
    assert SyntheticConfig(**TWO).num_fine_communities == 20
    assert np.bincount(fine).tolist() == [200] * 20
    assert (np.diff(fine) != 0).mean() > 0.5  # shuffled over item ids
    groups = two_level.extra["group_labels"]
    assert groups.column_names == ["group", "label", "coarse"]
    home = groups["label"].to_numpy()
    assert home.max() == 19 and home.min() == 0
    np.testing.assert_array_equal(groups["coarse"].to_numpy(), home // TWO["num_fine_per_coarse"])


def test_two_level_edges_follow_fine_communities(two_level):
    items, groups, fine, home = _arrays(two_level)
    per_group = np.bincount(groups, weights=fine[items] == home[groups]) / np.bincount(groups)
    expected = TWO["p_in"] + (1 - TWO["p_in"]) / 20  # noise draws: any of the 20 fine communities
    assert abs(per_group.mean() - expected) < 0.05, (per_group.mean(), expected)
    same_group = groups[1:] == groups[:-1]
    same_fine = fine[items[1:]] == fine[items[:-1]]
    assert same_fine[same_group].mean() > 0.55  # chance 1/20
    assert np.bincount(items, minlength=TWO["num_items"]).min() >= 1
    n_cov = two_level.extra["num_coverage_edges"]
    np.testing.assert_array_equal(fine[items[-n_cov:]], home[groups[-n_cov:]])  # coverage: fine home


def test_two_level_features_reveal_only_coarse(two_level):
    # Without noise, features are exactly the coarse centroid: identical across fine communities.
    exact = generate_synthetic(SyntheticConfig(**{**TWO, "num_groups": 100}, feature_noise=0.0))
    feats, coarse = _features(exact), exact.item_labels["coarse"].to_numpy()
    assert len(np.unique(feats, axis=0)) == TWO["num_communities"]
    for c in range(TWO["num_communities"]):
        assert (feats[coarse == c] == feats[coarse == c][0]).all()
    # With noise, nearest-centroid: coarse is recoverable, fine only by chance within the coarse.
    feats = _features(generate_synthetic(SyntheticConfig(**{**TWO, "num_groups": 100}, feature_noise=0.25)))
    fine = exact.item_labels["label"].to_numpy()
    train = np.arange(len(feats)) % 2 == 0

    def accuracy(labels):
        cent = np.stack([feats[train & (labels == c)].mean(0) for c in range(labels.max() + 1)])
        d = ((feats[~train, None, :] - cent[None]) ** 2).sum(-1)
        return (d.argmin(1) == labels[~train]).mean()

    coarse_acc = accuracy(coarse)
    assert coarse_acc > 0.9
    assert accuracy(fine) < 0.3 * coarse_acc + 0.05  # 1/5 of the coarse hits, plus slack


def test_one_fine_per_coarse_equals_single_level():
    single = generate_synthetic(SyntheticConfig(**BASE))
    one = generate_synthetic(SyntheticConfig(**BASE, num_fine_per_coarse=1))
    assert one.interactions.equals(single.interactions)
    assert one.item_features.equals(single.item_features)
    assert one.item_labels.drop_columns(["coarse"]).equals(single.item_labels)
    np.testing.assert_array_equal(one.item_labels["coarse"].to_numpy(), one.item_labels["label"].to_numpy())
    assert single.item_labels.column_names == ["item", "label"]  # single level: no coarse column
    assert single.extra["group_labels"].column_names == ["group", "label"]


def test_two_level_write_round_trip(two_level, tmp_path):
    summary = write_synthetic(SyntheticConfig(**TWO, timestamps=True), tmp_path / "syn", chunk_groups=1024)
    assert summary["num_fine_communities"] == 20
    assert summary["config"]["num_fine_per_coarse"] == TWO["num_fine_per_coarse"]
    back = read_synthetic(tmp_path / "syn")
    assert back.interactions.equals(two_level.interactions)
    assert back.item_labels.equals(two_level.item_labels)
    assert back.item_features.equals(two_level.item_features)
    assert back.extra["group_labels"].equals(two_level.extra["group_labels"])
    assert SyntheticConfig(**back.extra["config"]) == SyntheticConfig(**TWO, timestamps=True)


def test_fine_coarse_preset():
    from pinsage_ray.evaluation.planted import features_embedding, planted_precision

    cfg = fine_coarse_config(seed=3)
    assert (cfg.num_communities, cfg.num_fine_per_coarse, cfg.num_items, cfg.seed) == (10, 10, 4000, 3)
    ds = generate_synthetic(cfg)
    items, groups, fine, _ = _arrays(ds)
    assert 45_000 < len(items) < 70_000  # small enough to train on a laptop CPU
    same_group = groups[1:] == groups[:-1]
    assert (fine[items[1:]] == fine[items[:-1]])[same_group].mean() > 0.15  # graph carries fine: ~0.19, chance 0.01
    labels = {"fine": fine, "coarse": ds.item_labels["coarse"].to_numpy()}
    p = planted_precision(features_embedding(_features(ds)), labels, 10, sample=1000)
    assert 0.8 < p["coarse"] < 0.97, p  # features: coarse ~0.88
    assert p["fine"] < 0.13, p  # ~coarse / 10: no fine information
