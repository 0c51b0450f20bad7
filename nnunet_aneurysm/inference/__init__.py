"""Prediction of both stages: the stage-1 vessel channel, five-fold prediction, predict(series_path)."""
