export { explainHttp, classifyHttp, routeRules } from './classify.ts'
export { PROFILES, ROUTES, type ProfileName, type Route } from './profiles.ts'
export { SseMasker, holdBack } from './sse.ts'
export { maskJson, maskJsonText } from './json-mask.ts'
