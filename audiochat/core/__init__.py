"""The first layer: audio helpers, the scene, and the generic training loop. Imports nothing else
from the package."""
