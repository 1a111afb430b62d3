"""The high-spender label is learnable from the features, but not trivially."""

from __future__ import annotations

import numpy as np

from flow.train import train


def test_label_is_a_minority_of_customers(small_population):
    assert 0.18 <= small_population.high_spender.mean() <= 0.32


def test_label_follows_the_drivers_it_should(small_population):
    label = small_population.high_spender
    behavior, demographics = small_population.behavior, small_population.demographics
    recent = behavior["recency_days"] < 30
    lapsed = behavior["orders_12m"] == 0
    assert label[recent].mean() > 2 * label[~recent].mean()
    assert label[lapsed].mean() < 0.1
    converted = demographics["campaign_status"] == "converted"
    assert label[converted].mean() > label[demographics["campaign_status"] == "none"].mean()


def test_a_model_trained_on_a_small_run_has_real_but_imperfect_signal(small_population):
    metrics = train(small_population).card["metrics"]
    assert metrics["rows_train"] + metrics["rows_holdout"] == len(small_population.high_spender)
    assert 0.75 <= metrics["holdout_auc"] <= 0.95, metrics
    assert np.isfinite(metrics["holdout_auc"])
