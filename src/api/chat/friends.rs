//! Chat API: friends.

use crate::api::Routes;

pub(super) fn routes(routes: Routes) -> Routes {
    routes
}
