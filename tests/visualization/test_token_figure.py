"""The refined-token figure: class names on the detections, the query legend outside the image, colour bars
on the DAM and scorer panels."""

from __future__ import annotations

import numpy as np
import torch
from detectron2.structures import Boxes, Instances

from sparse_detr.visualization.token_figure import TokenView, draw_figure

SHAPES = [(8, 10), (4, 5), (2, 3), (1, 2)]


def _view() -> TokenView:
    rng = np.random.default_rng(0)
    detections = Instances((64, 80))
    detections.pred_boxes = Boxes(torch.tensor([[4.0, 6.0, 40.0, 30.0], [30.0, 20.0, 70.0, 60.0]]))
    detections.scores = torch.tensor([0.9, 0.2])
    detections.pred_classes = torch.tensor([1, 0])
    return TokenView(
        detections=detections,
        refined=[rng.random(shape) > 0.7 for shape in SHAPES],
        attention=[rng.random(shape) for shape in SHAPES],
        scores=[rng.random(shape) for shape in SHAPES],
        queries=rng.random((12, 2)),
        query_levels=np.arange(12) % 4,
        corr=np.full(5, 0.5),
        input_size=(64, 80),
        keep_ratio=0.3,
    )


def test_figure_labels_legend_and_colour_bars(tmp_path):
    image = np.random.default_rng(1).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    path = tmp_path / "figure.png"
    fig = draw_figure(image, [("tiny", _view())], str(path), top_k=12, names_per_model=[["circle", "square"]],
                      threshold=0.5)
    assert path.is_file()
    queries_ax = fig.axes[0]
    labels = [text.get_text() for text in queries_ax.texts]
    assert labels == ["square 0.90"]  # the class name, confident detections only
    assert min(text.get_fontsize() for text in queries_ax.texts) >= 8
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()  # the figure is closed: a canvas to measure on
    legend = queries_ax.get_legend().get_window_extent(renderer)
    image_box = queries_ax.get_window_extent(renderer)
    assert legend.y1 <= image_box.y0 + 1  # below the image, not over it
    assert [t.get_text() for t in queries_ax.get_legend().get_texts()] == [f"level {i}" for i in range(1, 5)]
    colour_bar_labels = [ax.get_ylabel() for ax in fig.axes[len(SHAPES) + 3 :]]
    assert colour_bar_labels == ["attention per pixel", "sigmoid score"]


def test_a_prediction_grid_tile_says_when_no_detection_passed_the_threshold():
    import numpy as np
    import torch
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.structures import Boxes, Instances
    from PIL import Image

    from sparse_detr.visualization import draw_prediction_grid

    class NothingPredictor:  # a Predictor that finds nothing
        image_format = "BGR"

        def __call__(self, image, name="image"):
            instances = Instances(image.shape[:2], pred_boxes=Boxes(torch.zeros(0, 4)), scores=torch.zeros(0),
                                  pred_classes=torch.zeros(0, dtype=torch.long))
            return {"instances": instances}

    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        path = f"{directory}/blank.png"
        Image.fromarray(np.full((120, 160, 3), 255, np.uint8)).save(path)
        DatasetCatalog.register("_blank_grid", lambda: [{"file_name": path, "image_id": 0}])
        MetadataCatalog.get("_blank_grid").thing_classes = ["a"]
        try:
            grid = draw_prediction_grid(NothingPredictor(), "_blank_grid", num_images=1, score_threshold=0.3)
        finally:
            DatasetCatalog.remove("_blank_grid")
            MetadataCatalog.remove("_blank_grid")
    assert (grid != 255).any()  # the words "no detection with score >= 0.3" are drawn on the white image
