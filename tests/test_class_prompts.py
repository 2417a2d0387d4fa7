"""Class prompts: ImageNet's 1000 short names, templates, Fashion-MNIST."""

import json

import pytest

from cdm_tf.data import class_names
from cdm_tf.data_preparation import fashion_mnist
from cdm_tf.text import class_prompts


def test_imagenet_has_1000_distinct_short_names_in_label_order():
  names = class_prompts.imagenet_prompt_names()
  assert len(names) == 1000
  assert len({n.lower() for n in names}) == 1000
  assert names[:4] == ["tench", "goldfish", "great white shark", "tiger shark"]
  assert names[207] == "golden retriever"
  assert names[999] == "toilet tissue"
  for name in names:
    assert name == name.strip() and "  " not in name
    assert all(c.isalnum() or c in " '-" for c in name), name
  # Most names are one or two words; longer species and breed names stay
  # whole (cutting "great white shark" to two words would change it).
  assert sum(len(n.split()) <= 2 for n in names) >= 970


def test_imagenet_names_that_collide_are_given_their_sense():
  names = class_prompts.imagenet_prompt_names()
  assert (names[134], names[517]) == ("crane bird", "construction crane")
  assert (names[638], names[639]) == ("tights", "one-piece bathing suit")
  assert (names[264], names[474]) == ("Cardigan Welsh corgi", "cardigan")


@pytest.mark.parametrize("raw, expected", [
    ("tench, Tinca tinca", "tench"),
    ("great_white_shark", "great white shark"),
    ("T-shirt/top", "T-shirt"),
    ("crane (bird)", "crane bird"),
    ("jack-o'-lantern", "jack-o'-lantern"),
    ("  Crème_brûlée!  ", "Crème brûlée"),
])
def test_clean_class_name(raw, expected):
  assert class_prompts.clean_class_name(raw) == expected


def test_clean_class_name_rejects_a_name_without_words():
  with pytest.raises(ValueError):
    class_prompts.clean_class_name("?!")


def test_templates():
  assert class_prompts.class_prompts(["tench",
                                      "goldfish"]) == ["tench", "goldfish"]
  assert class_prompts.class_prompts(
      ["tench"], template="a photo of a {}") == ["a photo of a tench"]
  for bad in ("a photo", "{} and {}", "a {0}", "{name}"):
    with pytest.raises(ValueError):
      class_prompts.class_prompts(["tench"], template=bad)


def test_fashion_mnist_names_from_its_classes_file(tmp_path):
  class_names.write_classes_file(str(tmp_path), fashion_mnist.CLASSES)
  assert class_prompts.dataset_prompt_names(str(tmp_path)) == [
      "T-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
      "sneaker", "bag", "ankle boot"
  ]


def test_without_a_classes_file_the_names_are_imagenet(tmp_path):
  names = class_prompts.dataset_prompt_names(str(tmp_path))
  assert names == class_prompts.imagenet_prompt_names()


def test_names_that_collide_are_an_error():
  classes = [
      class_names.ClassInfo("a", "dog"),
      class_names.ClassInfo("b", "Dog, domestic dog")
  ]
  with pytest.raises(ValueError, match="share a prompt name"):
    class_prompts.prompt_names(classes)


def test_curated_names_files(tmp_path):
  lines = tmp_path / "names.txt"
  lines.write_text("tench\n\ngreat white shark\n")
  assert class_prompts.load_names_file(
      str(lines)) == ["tench", "great white shark"]
  listed = tmp_path / "names.json"
  listed.write_text(json.dumps(["tench", "goldfish"]))
  assert class_prompts.load_names_file(str(listed),
                                       num_classes=2) == ["tench", "goldfish"]
  with pytest.raises(ValueError, match="2 names for 3 classes"):
    class_prompts.load_names_file(str(listed), num_classes=3)
