"""All sample-quality metrics of a generated set in one pass over its images.

``evaluate`` extracts the features of the first max(N) generated images
once, then reports, each labelled with its feature network:

* FID@N against every reference split's statistics, for each N
  (CDM: N = 10K and 50K, against train and validation);
* KID and precision/recall against every reference that kept real
  features (``fid.reference_statistics(..., keep_features=M)``), on all
  extracted generated images;
* the Inception Score, from the extractor's logits if it has them, else
  from ``classifier``'s: the 2015 Inception's 1008 logits
  (``inception_logits.InceptionLogits``) follow from the FID Inception's
  pool3 features at hand, another classifier takes a second pass over the
  images. Without either, the report's notes say that no IS is reported
  and why.

Typical use on ImageNet samples at 64x64::

  inception = fid_inception.FidInception()
  logits = inception_logits.from_file(
      "pt_inception-2015-12-05-6726825d.pth", inception)
  references = {split: fid.reference_statistics(
      data_dir, inception, split=split, resolution=64, keep_features=10_000)
      for split in ("train", "validation")}
  generated = reader.read(manifest.shard_paths(sample_dir))
  result = sample_quality.evaluate(generated, inception, references,
                                   classifier=logits)
  print(result.format_table())

``default_sample_counts`` picks the N's for a set of any size.
"""

from cdm_tf.metrics import features as features_lib
from cdm_tf.metrics import fid
from cdm_tf.metrics import inception_logits
from cdm_tf.metrics import inception_score
from cdm_tf.metrics import kid
from cdm_tf.metrics import precision_recall
from cdm_tf.metrics import report


def default_sample_counts(num_images):
  """The N's of FID@N for a set of ``num_images``: CDM's 10K and 50K where
  the set has them, and the whole set when it has fewer than 50K.

  E.g. 60K -> (10K, 50K), 30K -> (10K, 30K), 5K -> (5K,).
  """
  num_images = int(num_images)
  if num_images < 2:
    raise ValueError(f"FID needs at least 2 images, the set has {num_images}")
  largest = max(fid.SAMPLE_COUNTS)
  counts = {min(num_images, largest)}
  counts.update(n for n in fid.SAMPLE_COUNTS if n <= num_images)
  return tuple(sorted(counts))


def scores_from_features(classifier, extractor):
  """Whether ``classifier``'s logits follow from ``extractor``'s features
  (the 2015 Inception's 1008 logits on the FID Inception's pool3), so the
  Inception Score needs no second pass over the images."""
  return (isinstance(classifier, inception_logits.InceptionLogits) and
          classifier.reads_features_of(extractor))


def evaluate(generated, extractor, references, *,
             sample_counts=fid.SAMPLE_COUNTS, classifier=None, batch_size=None,
             kid_subsets=kid.NUM_SUBSETS, kid_subset_size=kid.SUBSET_SIZE,
             neighbourhood=precision_recall.NEIGHBOURHOOD, seed=0):
  """Sample-quality metrics of generated images.

  Args:
    generated: unbatched dataset of reader elements or uint8 images (e.g.
      ``synthetic_set.reader.read``), or their ``features.ExtractedFeatures``.
    extractor: the ``features.FeatureExtractor`` of FID, KID and
      precision/recall.
    references: {split name: ``fid.ReferenceStatistics``} of ``extractor``.
    sample_counts: the N's of FID@N; the first max(N) images are used.
    classifier: optional ``features.FeatureExtractor`` with logits for the
      Inception Score, when ``extractor`` has none (e.g.
      ``inception_logits.InceptionLogits`` on ``extractor``).
    batch_size: images per network call.
    kid_subsets, kid_subset_size: KID's subset sampling.
    neighbourhood: k of precision/recall.
    seed: KID's subset sampling seed.

  Returns:
    ``report.MetricsReport``.
  """
  count = max(sample_counts)
  if isinstance(generated, features_lib.ExtractedFeatures):
    extracted = generated.first(count)
  else:
    extracted = features_lib.extract(generated, extractor, num_examples=count,
                                     batch_size=batch_size)
  result = report.MetricsReport()
  result.extend(
      fid.fid_at(extracted,
                 {name: r.statistics for name, r in references.items()},
                 sample_counts))
  for name, reference in references.items():
    if reference.features is None:
      continue
    result.add(
        kid.kid(reference.features, extracted.features, extracted.network, name,
                num_subsets=kid_subsets, subset_size=kid_subset_size,
                seed=seed))
    result.extend(
        precision_recall.precision_recall(reference.features,
                                          extracted.features, extracted.network,
                                          name, k=neighbourhood))
  if extracted.logits is not None:
    result.add(
        inception_score.inception_score(extracted.logits, extracted.network))
  elif scores_from_features(classifier, extractor):
    result.add(
        inception_score.inception_score(classifier.logits(extracted.features),
                                        classifier.name))
  elif classifier is not None:
    if isinstance(generated, features_lib.ExtractedFeatures):
      raise ValueError("the Inception Score with a separate classifier needs "
                       "the generated images, not their features")
    scored = features_lib.extract(generated, classifier, num_examples=count,
                                  batch_size=batch_size)
    result.add(inception_score.inception_score(scored.logits, scored.network))
  else:
    result.notes.append(inception_logits.not_reported_note(extracted.network))
  return result
