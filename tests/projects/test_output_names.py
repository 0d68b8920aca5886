from pathlib import PurePath

from tests.helpers.project_scripts import load_script

unique_output_stems = load_script("output_names").unique_output_stems


def test_inputs_sharing_a_name_get_distinct_stems_that_say_where_they_came_from():
    files = ["in/a/photo.jpg", "in/a/photo.png", "in/b/photo.png", "in/b/other.jpg"]
    stems = unique_output_stems(files)
    assert stems == {
        "in/a/photo.jpg": PurePath("a/photo_jpg"),
        "in/a/photo.png": PurePath("a/photo_png"),
        "in/b/photo.png": PurePath("b/photo"),
        "in/b/other.jpg": PurePath("b/other"),
    }


def test_one_directory_keeps_plain_names_and_companions_never_collide():
    assert unique_output_stems(["d/x.png", "d/y.jpg"]) == {"d/x.png": PurePath("x"), "d/y.jpg": PurePath("y")}
    # x.png's figure x_tokens.png would be overwritten by the drawing of the input x_tokens.png
    stems = unique_output_stems(["d/x.png", "d/x_tokens.png"], companions=("", "_tokens"))
    names = [f"{stems[f]}{c}" for f in stems for c in ("", "_tokens")]
    assert len(set(names)) == 4
    # case-insensitive file systems: Photo.png and photo.jpg
    stems = unique_output_stems(["d/Photo.png", "d/photo.jpg"])
    assert len({str(s).lower() for s in stems.values()}) == 2
