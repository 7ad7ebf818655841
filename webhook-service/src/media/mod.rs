//! Signed, expiring URLs for generated images, served by the HTTP API's media route.
