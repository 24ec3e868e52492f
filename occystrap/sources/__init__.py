"""Local sources of images: merged directories and docker-save tarballs."""
