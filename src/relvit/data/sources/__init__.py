"""Where each dataset's images and labels come from."""
