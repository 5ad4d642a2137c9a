// trainloop: the end. Internal macros are undefined here, so none leaks into the user's code.
#pragma once
#undef TRAINLOOP_DETAIL_BEGIN
#undef TRAINLOOP_DETAIL_END
#undef TRAINLOOP_DETAIL_ABI_NAME
#undef TRAINLOOP_DETAIL_CAT
#undef TRAINLOOP_DETAIL_CAT2
#undef TRAINLOOP_DETAIL_BUILTIN_EVENTS
#undef TRAINLOOP_DETAIL_MEMBER_PROBE
#undef TRAINLOOP_DETAIL_NEAR_MISS_HOOKS
