"""The project's own scene GAN: a ProGAN-style upsampling generator and a convolutional discriminator."""

from gandissect.models.scenegan.modeling import GeneratorConfig, SceneDiscriminator, SceneGenerator

__all__ = ["GeneratorConfig", "SceneDiscriminator", "SceneGenerator"]
