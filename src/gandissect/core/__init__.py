"""The core: pure functions and small classes over tensors that import nothing else of the package.

Hooks (`hooks`, `edits`), latent sampling (`sampling`), feature maps (`features`), streaming statistics
(`stats`, `levels`), the segmenter protocol (`segmenters`), picture conversions (`images`) and the user
errors every layer above raises (`errors`).
"""
